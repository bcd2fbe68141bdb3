"""The steps every generating route shares, whatever its dialect: resolve the model, check its
capabilities, merge options, build the `Generation`, and hand it to the scheduler."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from flask import current_app, g, request

from rkollama.core import structured
from rkollama.core.collect import collect
from rkollama.core.request import Request, check_capabilities, effective_options, load_options, to_generation
from rkollama.core.types import Done, DoneReason, Event, Generation, LoadOptions, Token
from rkollama.errors import FormatNotMet

if TYPE_CHECKING:
    from rkollama.models.store import ModelSpec
    from rkollama.server.app import Deps


class EventStream(Protocol):
    """What a generating route reads: the scheduler's Stream, or a Replay of a checked answer."""

    load_duration: float
    """Seconds spent loading the model for this request."""
    constrains_format: bool

    def __iter__(self) -> Iterator[Event]: ...

    def __next__(self) -> Event: ...

    def close(self) -> None: ...


@dataclass
class Prepared:
    spec: "ModelSpec"
    gen: Generation
    load_opts: LoadOptions


def deps() -> "Deps":
    return current_app.config["RKOLLAMA"]


def disconnected() -> Callable[[], bool] | None:
    """Waitress's "client went away" probe (present with channel_request_lookahead)."""
    return request.environ.get("waitress.client_disconnected")


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
    return _validated(gen, start)


def _validated(gen: Generation, start: Callable[[Generation], EventStream]) -> "Replay":
    messages = structured.with_instruction(gen.messages or [], gen.format)
    load_s, prompt_tokens, eval_tokens, prompt_ms, eval_ms = 0.0, 0, 0, 0.0, 0.0
    reason: str | None = ""
    for _ in range(structured.MAX_ATTEMPTS):
        stream = start(replace(gen, messages=messages))
        load_s += stream.load_duration
        completion = collect(stream)
        done = completion.done
        prompt_tokens, prompt_ms = done.prompt_tokens, prompt_ms + done.prompt_ms
        eval_tokens, eval_ms = eval_tokens + done.eval_tokens, eval_ms + done.eval_ms
        # An answer cut off by num_predict cannot match a format; it is returned as it is (with
        # done_reason "length"), as an engine with a grammar would return it.
        truncated = done.reason is not DoneReason.STOP
        reason = None if truncated else structured.problem(completion.content, gen.format)
        if reason is None:
            events = ([Token(completion.thinking, thinking=True)] if completion.thinking else []) + \
                [Token(completion.content)] + list(completion.tool_calls) + \
                [Done(done.reason, prompt_tokens, prompt_ms, eval_tokens, eval_ms)]
            return Replay(events, load_s)
        messages = structured.retry_messages(messages, completion.content, reason, gen.format)
    raise FormatNotMet(f"the model did not produce the requested format after "
                        f"{structured.MAX_ATTEMPTS} attempts: {reason}")


class Replay:
    """A finished answer served like a live stream (same iterator, close and load_duration)."""

    constrains_format = True

    def __init__(self, events: list[Event], load_s: float):
        self._events = iter(events)
        self.load_duration = load_s

    def __iter__(self) -> "Replay":
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        pass


def load(spec: "ModelSpec", options: object, keep_alive: float | None) -> float:
    """Load `spec` with a request's `options` now; the seconds it took (0 when it was loaded)."""
    g.model = spec.name.display()
    opts = load_options(effective_options(spec, options))
    return deps().scheduler.load(spec, opts, keep_alive, disconnected())


def embed(model: str, texts: list[str], truncate: bool, options: object,
          keep_alive: float | None) -> tuple[list[list[float]], int, float]:
    """(vectors, tokens, load seconds) for `texts`; 404 as the embed endpoints word it."""
    from rkollama.errors import ModelNotFound

    g.model = model
    try:
        spec = deps().store.resolve(model)
    except ModelNotFound:
        raise ModelNotFound(f'model "{model}" not found, try pulling it first') from None
    if not texts:
        load(spec, options, keep_alive)
        return [], 0, 0.0
    opts = load_options(effective_options(spec, options))
    return deps().scheduler.embed(spec, opts, texts, truncate, keep_alive, disconnected())
