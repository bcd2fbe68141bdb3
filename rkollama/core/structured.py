"""Structured output for engines that cannot constrain sampling (the NPU runtime): the schema
goes into the prompt, the answer is validated, and a bad answer is retried with the validation
error, a few times at most. (The CPU engine enforces formats with a llama.cpp grammar instead.)"""

import json

from rkollama.core.types import Message

MAX_ATTEMPTS = 3

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "integer": int, "number": (int, float)}


_SCHEMA_MAP = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
MAX_SCHEMA_DEPTH = 32


def schema_fault(schema, path: str = "format", depth: int = 0) -> str | None:
    """What makes `schema` not a JSON Schema the keywords it uses can be read from (a request's
    `format` is hostile input: `{"properties": null}` must be a 400, not a crash later), or None.
    Only the shapes of keywords are checked, not their meaning."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{path} must be an object"
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path} is nested too deeply"
    kind = schema.get("type")
    if kind is not None and not (isinstance(kind, str) or
                                 (isinstance(kind, list) and all(isinstance(k, str) for k in kind))):
        return f"{path}.type must be a string or a list of strings"
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{path}.enum must be a list"
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        return f"{path}.required must be a list of strings"
    for key in _SCHEMA_MAP:
        if key in schema:
            if not isinstance(schema[key], dict):
                return f"{path}.{key} must be an object"
            for name, sub in schema[key].items():
                fault = schema_fault(sub, f"{path}.{key}.{name}", depth + 1)
                if fault:
                    return fault
    for key in _SCHEMA_LIST:
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                return f"{path}.{key} must be a non-empty list"
            for index, sub in enumerate(schema[key]):
                fault = schema_fault(sub, f"{path}.{key}[{index}]", depth + 1)
                if fault:
                    return fault
    for key in ("items", "additionalProperties", "not"):
        if key in schema:
            fault = schema_fault(schema[key], f"{path}.{key}", depth + 1)
            if fault:
                return fault
    return None


def instruction(fmt) -> str:
    if fmt == "json":
        return "Reply with a single JSON value and nothing else."
    return ("Reply with a single JSON value and nothing else, matching this JSON schema:\n"
            + json.dumps(fmt))


def problem(text: str, fmt) -> str | None:
    """Why `text` does not satisfy `fmt` ("json" or a schema), or None when it does."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"the reply is not valid JSON ({exc})"
    if fmt == "json":
        return None
    errors = schema_errors(value, fmt, "$")
    return "; ".join(errors[:3]) if errors else None


def schema_errors(value, schema: dict, path: str) -> list[str]:
    """A small JSON Schema check: type, enum, const, properties, required,
    additionalProperties: false, items, anyOf. Enough to catch what models get wrong."""
    if not isinstance(schema, dict):
        return []
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf")
        if all(schema_errors(value, option, path) for option in options):
            return [f"{path} matches none of the allowed shapes"]
        return []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is(value, k) for k in kinds):
        return [f"{path} should be {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path} should be one of {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{path} should be {schema['const']!r}"]
    errors = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{path}.{k} is missing" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{path}.{k} is not allowed" for k in value if k not in props]
        for key, sub in props.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{index}]")
    return errors


def _is(value, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, object))


def with_instruction(messages: list, fmt) -> list:
    """The conversation with the format instruction added to the last user turn."""
    out = list(messages)
    for index in range(len(out) - 1, -1, -1):
        if out[index].role == "user":
            m = out[index]
            out[index] = Message(m.role, f"{m.content}\n\n{instruction(fmt)}", m.images, m.tool_calls,
                                 m.tool_name, m.thinking)
            break
    return out


def retry_messages(messages: list, answer: str, reason: str, fmt) -> list:
    return messages + [Message("assistant", answer),
                       Message("user", f"That reply was not accepted: {reason}. {instruction(fmt)}")]
