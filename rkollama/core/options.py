"""Ollama's option table (`options`, Modelfile `parameters`, `/set parameter`) and typing rules."""

import dataclasses
import math
import os
from dataclasses import dataclass

from rkollama.core.types import JSONObject, SamplingOptions
from rkollama.errors import BadRequest

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
NUM_CTX_FLOOR = 4
"""Smallest context a model is loaded with: smaller requests get this many tokens (Ollama's floor)."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1000


@dataclass(frozen=True)
class Option:
    """One option: its type, whether it is fixed at load time (changing it reloads the model),
    and its inclusive bounds (None: unbounded on that side; `high_cores`: the machine's cores)."""

    kind: type
    load: bool
    low: float | None = None
    high: float | None = None
    high_cores: bool = False


OPTIONS: dict[str, Option] = {
    "num_ctx": Option(int, True, 0, 1 << 20),          # 0 = the default context
    "num_batch": Option(int, True, 0, 1 << 16),        # 0 = the engine's default; capped at num_ctx
    "num_gpu": Option(int, True, -1, 1024),            # accepted and ignored (no GPU offload)
    "main_gpu": Option(int, True, 0, 1024),
    "use_mmap": Option(bool, True),
    "num_thread": Option(int, True, 0, None, high_cores=True),  # 0 = RKOLLAMA_NUM_THREADS
    # Accepted and ignored, as a Modelfile from Ollama may set it: no draft model, no speculation.
    "draft_num_predict": Option(int, True, -INT32_MAX, INT32_MAX),
    "num_keep": Option(int, False, -1, INT32_MAX),
    "seed": Option(int, False, -INT64_MAX - 1, INT64_MAX),
    "num_predict": Option(int, False, -2, INT32_MAX),  # -1 unlimited, -2 fill the context
    "top_k": Option(int, False, 0, INT32_MAX),
    "top_p": Option(float, False, 0.0, 1.0),
    "min_p": Option(float, False, 0.0, 1.0),
    "typical_p": Option(float, False, 0.0, 1.0),
    "repeat_last_n": Option(int, False, -1, INT32_MAX),
    "temperature": Option(float, False, 0.0, 100.0),
    "repeat_penalty": Option(float, False, 0.0, 100.0),
    "presence_penalty": Option(float, False, -100.0, 100.0),
    "frequency_penalty": Option(float, False, -100.0, 100.0),
    "stop": Option(list, False),
}

DEFAULTS: dict[str, object] = dataclasses.asdict(SamplingOptions())
"""Ollama's built-in defaults for the runtime options, by name (from SamplingOptions)."""
DEFAULT_NUM_BATCH = 512

LOAD_OPTIONS = tuple(name for name, option in OPTIONS.items() if option.load)


def machine_cores() -> int:
    """CPU cores this process may use (the upper bound of num_thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", list: "array", str: "string"}


def coerce_option(name: str, value: object) -> int | float | bool | list[str]:
    """Type and bound one option value as Ollama types it: ints given as floats are truncated.

    Returns the typed value; raises BadRequest (`option "x" must be of type integer`, `option "x"
    must be between 0 and 2`) on a mismatch. Callers skip unknown names themselves (they are
    ignored, never an error, in requests).
    """
    option = OPTIONS[name]
    kind = option.kind
    bad = BadRequest(f'option "{name}" must be of type {_TYPE_NAMES[kind]}')
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if kind is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        if len(value) > MAX_STOPS or any(len(v) > MAX_STOP_CHARS for v in value):
            raise BadRequest(f'option "{name}" allows at most {MAX_STOPS} sequences of at most '
                             f"{MAX_STOP_CHARS} characters")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f'option "{name}" must be a finite number')
    typed = int(value) if kind is int else float(value)
    low = option.low
    high = machine_cores() if option.high_cores else option.high
    if (low is not None and typed < low) or (high is not None and typed > high):
        shown = [int(b) if kind is int and b is not None else b for b in (low, high)]
        if high is None:
            raise BadRequest(f'option "{name}" must be at least {shown[0]}')
        raise BadRequest(f'option "{name}" must be between {shown[0]} and {shown[1]}')
    return typed


def merge_request_options(base: JSONObject, request_options: object) -> JSONObject:
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


def parse_cli_value(name: str, words: list[str]) -> int | float | bool | list[str]:
    """Type a `/set parameter name v…` value from text, as the Ollama CLI does."""
    if name not in OPTIONS:
        raise BadRequest(f"unknown parameter '{name}'")
    kind = OPTIONS[name].kind
    text = " ".join(words)
    try:
        if kind is list:
            return coerce_option(name, list(words))
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if kind is int:
            return coerce_option(name, int(float(text)) if "." in text else int(text))
        return coerce_option(name, float(text))
    except ValueError:
        raise BadRequest(f"invalid {_TYPE_NAMES[kind]} value {text!r} for parameter '{name}'") from None
