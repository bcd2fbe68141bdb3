"""Ollama's option table (`options`, Modelfile `parameters`, `/set parameter`) and typing rules."""

from rkollama.errors import BadRequest

# name -> (type, load-time?). Load-time options force a reload when they change.
OPTIONS: dict[str, tuple[type, bool]] = {
    "num_ctx": (int, True),
    "num_batch": (int, True),
    "num_gpu": (int, True),
    "main_gpu": (int, True),
    "use_mmap": (bool, True),
    "num_thread": (int, True),
    "num_keep": (int, False),
    "seed": (int, False),
    "num_predict": (int, False),
    "top_k": (int, False),
    "top_p": (float, False),
    "min_p": (float, False),
    "typical_p": (float, False),
    "repeat_last_n": (int, False),
    "temperature": (float, False),
    "repeat_penalty": (float, False),
    "presence_penalty": (float, False),
    "frequency_penalty": (float, False),
    "stop": (list, False),
}

# Ollama's built-in defaults for runtime options (api/types.go DefaultOptions).
DEFAULTS: dict[str, object] = {
    "num_keep": 4, "seed": -1, "num_predict": -1, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
    "typical_p": 1.0, "repeat_last_n": 64, "temperature": 0.8, "repeat_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "stop": [],
}

LOAD_OPTIONS = tuple(name for name, (_, load) in OPTIONS.items() if load)

_TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", list: "array", str: "string"}


def coerce_option(name: str, value):
    """Type one option value as Ollama does: ints given as floats are truncated; wrong types raise.

    Returns the typed value; raises BadRequest(`option "x" must be of type integer`) on a mismatch.
    Callers skip unknown names themselves (they are ignored, never an error, in requests).
    """
    kind, _ = OPTIONS[name]
    bad = BadRequest(f'option "{name}" must be of type {_TYPE_NAMES[kind]}')
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if value != value or value in (float("inf"), float("-inf")):
            raise bad
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad
    raise bad


def merge_request_options(base: dict, request_options) -> dict:
    """Overlay request `options` on `base`; unknown keys are ignored (Open WebUI sends legacy ones)."""
    if request_options is None:
        return dict(base)
    if not isinstance(request_options, dict):
        raise BadRequest("options must be an object")
    merged = dict(base)
    for name, value in request_options.items():
        if name in OPTIONS and value is not None:
            merged[name] = coerce_option(name, value)
    return merged


def parse_cli_value(name: str, words: list[str]):
    """Type a `/set parameter name v…` value from text, as the Ollama CLI does."""
    if name not in OPTIONS:
        raise BadRequest(f"unknown parameter '{name}'")
    kind, _ = OPTIONS[name]
    text = " ".join(words)
    try:
        if kind is list:
            return list(words)
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if kind is int:
            return int(float(text)) if "." in text else int(text)
        return float(text)
    except ValueError:
        raise BadRequest(f"invalid {_TYPE_NAMES[kind]} value {text!r} for parameter '{name}'")
