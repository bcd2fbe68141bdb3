"""The steps every generating route shares, whatever its dialect: resolve the model, check its
capabilities, merge options, build the `Generation`, and hand it to the scheduler."""

from dataclasses import dataclass

from flask import current_app, request

from rkollama.core.request import check_capabilities, effective_options, load_options, to_generation


@dataclass
class Prepared:
    spec: object
    gen: object
    load_opts: object


def deps():
    return current_app.config["RKOLLAMA"]


def disconnected():
    """Waitress's "client went away" probe (present with channel_request_lookahead)."""
    return request.environ.get("waitress.client_disconnected")


def prepare(req, endpoint: str) -> Prepared:
    spec = deps().store.resolve(req.model)
    check_capabilities(spec, req, endpoint)
    options = effective_options(spec, req.options)
    return Prepared(spec, to_generation(spec, req, options), load_options(options))


def submit(req, prepared: Prepared):
    return deps().scheduler.submit(prepared.spec, prepared.gen, prepared.load_opts,
                                   req.keep_alive, disconnected())


def embed(model: str, texts: list[str], truncate: bool, options, keep_alive):
    """(vectors, tokens, load seconds) for `texts`; 404 as the embed endpoints word it."""
    from rkollama.errors import ModelNotFound

    try:
        spec = deps().store.resolve(model)
    except ModelNotFound:
        raise ModelNotFound(f'model "{model}" not found, try pulling it first') from None
    opts = load_options(effective_options(spec, options))
    if not texts:
        deps().scheduler.load(spec, opts, keep_alive, disconnected())
        return [], 0, 0.0
    return deps().scheduler.embed(spec, opts, texts, truncate, keep_alive, disconnected())
