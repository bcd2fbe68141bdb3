"""The steps every generating route shares, whatever its dialect: resolve the model, check its
capabilities, merge options, build the `Generation`, and hand it to the scheduler (a `format`
the engine cannot enforce goes through format_retry.py)."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import g

from rkollama.core.request import Request, check_capabilities, effective_options, load_options, to_generation
from rkollama.core.types import Generation, LoadOptions
from rkollama.server.deps import deps, disconnected
from rkollama.server.format_retry import validated
from rkollama.server.streaming import EventStream

if TYPE_CHECKING:
    from rkollama.models.store import ModelSpec


@dataclass
class Prepared:
    spec: "ModelSpec"
    gen: Generation
    load_opts: LoadOptions


def prepare(req: Request, endpoint: str) -> Prepared:
    g.model = req.model  # for the access log
    spec = deps().store.resolve(req.model)
    check_capabilities(spec, req, endpoint)
    options = effective_options(spec, req.options)
    return Prepared(spec, to_generation(spec, req, options), load_options(options))


def submit(req: Request, prepared: Prepared) -> EventStream:
    """The event stream of the request. A `format` that the engine cannot enforce is checked
    after the fact (and retried): the reply is then replayed from the validated answer."""
    def start(gen: Generation) -> EventStream:
        return deps().scheduler.submit(prepared.spec, gen, prepared.load_opts, req.keep_alive,
                                       disconnected())

    gen = prepared.gen
    if not gen.format or gen.messages is None:
        return start(gen)
    # Decided before acquiring the model: opening a stream only to ask would load it twice
    # with keep_alive 0.
    known = deps().scheduler.constrains_format(prepared.spec)
    if known:
        return start(gen)
    if known is None:
        stream = start(gen)
        if stream.constrains_format:
            return stream
        stream.close()
    return validated(gen, start)


def load(spec: "ModelSpec", options: object, keep_alive: float | None) -> float:
    """Load `spec` with a request's `options` now; the seconds it took (0 when it was loaded)."""
    g.model = spec.name.display()
    opts = load_options(effective_options(spec, options))
    return deps().scheduler.load(spec, opts, keep_alive, disconnected())


