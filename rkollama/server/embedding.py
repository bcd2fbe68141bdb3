"""Embeddings for /api/embed, /api/embeddings and /v1/embeddings: the model resolved as those
endpoints word a missing one, then the scheduler's embedding."""

from flask import g

from rkollama.core.embed import check_inputs
from rkollama.core.request import effective_options, load_options
from rkollama.server.deps import deps, disconnected
from rkollama.server.pipeline import load


def embed(model: str, texts: list[str], truncate: bool, options: object,
          keep_alive: float | None) -> tuple[list[list[float]], int, float]:
    """(vectors, tokens, load seconds) for `texts`; 404 as the embed endpoints word it."""
    from rkollama.errors import ModelNotFound

    g.model = model
    check_inputs(texts)  # before the model is looked up: a size refusal costs nothing
    try:
        spec = deps().store.resolve(model)
    except ModelNotFound:
        raise ModelNotFound(f'model "{model}" not found, try pulling it first') from None
    if not texts:
        load(spec, options, keep_alive)
        return [], 0, 0.0
    opts = load_options(effective_options(spec, options))
    return deps().scheduler.embed(spec, opts, texts, truncate, keep_alive, disconnected())
