"""Go-style durations: parsing `keep_alive` values and printing `time.Duration` strings."""

import math
import re

from rkollama.errors import BadRequest

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

FOREVER = math.inf
MAX_DURATION_S = (2**63 - 1) / 1e9
"""Go's longest time.Duration (about 292 years): a longer keep-alive means forever."""


def parse_keep_alive(value: object) -> float:
    """Return a keep-alive in seconds; `FOREVER` (inf) for negative values.

    Accepts JSON numbers (seconds, floats allowed), Go duration strings ("5m", "1h30m", "-1m") and,
    more leniently than Ollama, unit-less numeric strings as seconds. Raises BadRequest otherwise.
    """
    if isinstance(value, bool):
        raise BadRequest(f"invalid keep_alive: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_string(value.strip())
    else:
        raise BadRequest(f"invalid keep_alive: {value!r}")
    if not math.isfinite(seconds):  # NaN, or a number past float64 (`1e400`): Go's decoder refuses both
        raise BadRequest(f"invalid keep_alive: {value!r}")
    return FOREVER if seconds < 0 or seconds >= MAX_DURATION_S else seconds


def keep_alive_seconds(value: object) -> float | None:
    """A request's `keep_alive` in seconds; None when absent (the model keeps its current one)."""
    return None if value is None else parse_keep_alive(value)


def _parse_duration_string(text: str) -> float:
    if not text:
        raise BadRequest('time: invalid duration ""')
    try:
        return float(text)
    except ValueError:
        pass
    negative = text.startswith("-")
    body = text.lstrip("+-")
    invalid = BadRequest(f'time: invalid duration "{text}"')
    limit = 2**63 - (0 if negative else 1)  # Go's time.Duration: -2**63 .. 2**63-1 ns
    pos, total_ns = 0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            raise invalid
        total_ns += _part_ns(match.group(1), _UNITS_NS[match.group(2)])
        if total_ns > limit:  # Go's ParseDuration refuses what does not fit
            raise invalid
        pos = match.end()
    if not body:
        raise invalid
    return (-total_ns if negative else total_ns) / 1e9


def _part_ns(number: str, unit: int) -> int:
    """Nanoseconds of one `number` of `unit` as Go's ParseDuration counts them: the whole part
    exactly, the fraction through a float64 and truncated; 2**64 for a whole part of more than
    19 digits (past any duration, and past what int() reads)."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > 19:
        return 2**64
    ns = int(whole or "0") * unit
    fraction = fraction[:18]  # Go stops counting a fraction's digits where they would overflow
    if fraction.strip("0"):
        ns += int(float(int(fraction)) * (unit / 10 ** len(fraction)))
    return ns


def format_go_duration(ns: int) -> str:
    """Format integer nanoseconds exactly like Go's `time.Duration.String()`."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(int(ns))
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return sign + _fraction(ns, 1_000) + "µs"
    if ns < 1_000_000_000:
        return sign + _fraction(ns, 1_000_000) + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
