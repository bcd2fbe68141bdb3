"""pydantic's validation errors in this project's words: `where: what`, one line."""

from typing import Any


def describe(error: Any, prefix: str = "") -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as this project words
    validation errors: where (dotted, after `prefix`), then what."""
    loc = [str(part) if not isinstance(part, int) else f"[{part}]" for part in error["loc"]]
    loc = [prefix, *loc] if prefix else loc
    where = ".".join(loc).replace(".[", "[")
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        parent = where.rsplit(".", 1)[0] if "." in where else "top level"
        return f"unknown key '{error['loc'][-1]}' in {parent}"
    if kind == "missing":
        inside = f" in {where.rsplit('.', 1)[0]}" if "." in where else ""
        return f"missing key '{error['loc'][-1]}'{inside}"
    if kind in ("model_type", "dict_type"):
        return f"{where or 'top level'} must be a mapping"
    if error["loc"] and error["loc"][-1] == "[key]":  # a mapping key outside its Literal
        parent = ".".join([prefix] * bool(prefix) + [str(part) for part in error["loc"][:-2]])
        return f"unknown key '{error['loc'][-2]}' in {parent}"
    message = message.removeprefix("Value error, ")
    return f"{where}: {message[0].lower()}{message[1:]}" if where else message
