"""Post-processing of embedding vectors: L2 normalisation and Matryoshka-style truncation."""

import math

from rkollama.errors import BadRequest

MAX_INPUTS = 2048
"""Most texts one embedding request may carry (OpenAI's own limit): the answer is one vector of
the model's width per text, so the count decides the reply's size and the engine's time."""


def check_inputs(texts: list[str]) -> None:
    if len(texts) > MAX_INPUTS:
        raise BadRequest(f"too many inputs: {len(texts)} (at most {MAX_INPUTS} texts per request)")


def normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def shape(vectors: list[list[float]], dimensions: int | None, normalised: bool = True) -> list[list[float]]:
    """Truncate each vector to `dimensions` (when smaller), then L2-normalise (when asked)."""
    out = []
    for vector in vectors:
        if dimensions and 0 < dimensions < len(vector):
            vector = vector[:dimensions]
        out.append(normalise(vector) if normalised else list(vector))
    return out
