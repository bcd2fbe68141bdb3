"""Structured output for engines that cannot constrain sampling (the NPU runtime): the schema
goes into the prompt, the answer is validated, and a bad answer is retried with the validation
error, a few times at most. (The CPU engine enforces formats with a llama.cpp grammar instead.)
Validation is the `jsonschema` library's, for the schema's own draft (2020-12 by default)."""

import json
from collections.abc import Iterator

import jsonschema

from rkollama.core import schema_refs, schema_regex
from rkollama.core.types import JSONObject, Message

MAX_ATTEMPTS = 3

_SCHEMA_MAP = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
MAX_SCHEMA_DEPTH = 32


def schema_fault(schema: object) -> str | None:
    """Why a request's `format` schema cannot be used, in words for a 400, or None. It is hostile
    input: `{"properties": null}`, `{"minimum": "x"}` or a `$ref` to elsewhere must be refused
    here, not crash a validation later."""
    return (_shape_fault(schema) or cost_fault(schema) or _unsatisfiable(schema)
            or _keyword_fault(schema))  # type: ignore[arg-type]  # _shape_fault passed: a dict or a bool


def _unsatisfiable(schema: object) -> str | None:
    """A schema no answer can ever match at its root (`false`, an empty `enum`, `not: {}`): a
    400 now, rather than three generations and a 500."""
    if schema is False:
        return "format is false: no answer can match it"
    if isinstance(schema, dict):
        if schema.get("enum") == []:
            return "format.enum is empty: no answer can match it"
        if schema.get("not") in ({}, True):
            return "format.not matches everything: no answer can match it"
    return None


MAX_SCHEMA_COUNT = 10_000
"""Largest minLength/maxLength/minItems/maxItems/minProperties/maxProperties/minContains/
maxContains a `format` schema may name: a grammar repeats a rule that many times, and no answer
is that long (a 1e9 minLength made the CPU runner grow past 3 GB before a token)."""
MAX_SCHEMA_ENUM = 2_000
"""Most `enum` and `const` values in one schema altogether (100,000 took the grammar builder past
60 s)."""
MAX_SCHEMA_NODES = 5_000
"""Most subschemas in one schema (properties, items, alternatives…): each is a grammar rule and
a validation step (100,000 properties took 20 s before any engine work)."""
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
           "minContains", "maxContains")


def cost_fault(schema: object) -> str | None:
    """A schema whose grammar would be unbounded work: counts past MAX_SCHEMA_COUNT, enums past
    MAX_SCHEMA_ENUM values, more than MAX_SCHEMA_NODES subschemas. Checked before any engine
    work, in milliseconds."""
    from rkollama.core.schema_refs import subschemas

    values = 0
    for nodes, node in enumerate(subschemas(schema), start=1):
        if nodes > MAX_SCHEMA_NODES:
            return f"format has more than {MAX_SCHEMA_NODES} subschemas"
        for key in _COUNTS:
            count = node.get(key)
            if isinstance(count, (int, float)) and not isinstance(count, bool) and count > MAX_SCHEMA_COUNT:
                return (f"format.{key} {count:g} is more than an answer can hold "
                        f"(at most {MAX_SCHEMA_COUNT})")
        enum = node.get("enum")
        values += (len(enum) if isinstance(enum, list) else 0) + ("const" in node)
        if values > MAX_SCHEMA_ENUM:
            return f"format has more than {MAX_SCHEMA_ENUM} enum values"
    return None


def _shape_fault(schema: object, path: str = "format", depth: int = 0) -> str | None:
    """The shapes of the structural keywords, walked to a bounded depth (so the meta-schema
    check after it never recurses without end), in the words the API documents."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{path} must be an object"
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path} is nested too deeply"
    fault = _keyword_shapes(schema, path)
    children = iter(()) if fault else _children(schema, path)
    for sub, where in children:
        fault = _shape_fault(sub, where, depth + 1)
        if fault:
            break
    return fault


def _keyword_shapes(schema: JSONObject, path: str) -> str | None:
    """What is wrong with one node's own keywords (not its subschemas), or None."""
    for key in ("$schema", "$id", "$ref", "$anchor", "$dynamicRef"):  # looked up before validation
        if key in schema and not isinstance(schema[key], str):
            return f"{path}.{key} must be a string"
    kind = schema.get("type")
    if kind is not None and not (isinstance(kind, str) or
                                 (isinstance(kind, list) and all(isinstance(k, str) for k in kind))):
        return f"{path}.type must be a string or a list of strings"
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{path}.enum must be a list"
    required = schema.get("required")
    if required is not None and not (isinstance(required, list)
                                     and all(isinstance(r, str) for r in required)):
        return f"{path}.required must be a list of strings"
    for key in _SCHEMA_MAP:
        if key in schema and not isinstance(schema[key], dict):
            return f"{path}.{key} must be an object"
    for key in _SCHEMA_LIST:
        if key in schema and (not isinstance(schema[key], list) or not schema[key]):
            return f"{path}.{key} must be a non-empty list"
    return None


def _children(schema: JSONObject, path: str) -> Iterator[tuple[object, str]]:
    """The subschemas of a node whose keywords passed `_keyword_shapes`, with their paths, in
    the order the faults are reported."""
    for key in _SCHEMA_MAP:
        for name, sub in schema.get(key, {}).items():
            yield sub, f"{path}.{key}.{name}"
    for key in _SCHEMA_LIST:
        for index, sub in enumerate(schema.get(key, [])):
            yield sub, f"{path}.{key}[{index}]"
    for key in ("items", "additionalProperties", "not"):
        if key in schema:
            yield schema[key], f"{path}.{key}"


def instruction(fmt: object) -> str:
    if fmt == "json":
        return "Reply with a single JSON value and nothing else."
    return ("Reply with a single JSON value and nothing else, matching this JSON schema:\n"
            + json.dumps(fmt))


def problem(text: str, fmt: object) -> str | None:
    """Why `text` does not satisfy `fmt` ("json" or a schema), or None when it does. The words
    go into the retry prompt, so they name where in the reply (`$.a[0]`) and what is wrong."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"the reply is not valid JSON ({exc})"
    except RecursionError:
        return "the reply nests too deeply to read"
    if fmt == "json" or not isinstance(fmt, dict | bool):
        return None
    try:
        errors = sorted(_validator(fmt).iter_errors(value), key=jsonschema.exceptions.relevance)
    except RecursionError:  # schema_fault bounds the schema; a value can still nest very deeply
        return "the reply nests too deeply to check against the schema"
    return "; ".join(f"{e.json_path}: {e.message}" for e in errors[:3]) or None


def _validator(schema: JSONObject | bool) -> jsonschema.protocols.Validator:
    """A validator for the schema's own draft (`$schema`), 2020-12 when it names none."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return schema_regex.timed(cls)(schema)


def _keyword_fault(schema: JSONObject | bool) -> str | None:
    """What the JSON Schema meta-schema refuses in `schema` (e.g. `minimum: "x"`), regex keywords
    it could not time, or `$ref`s that cannot be followed (schema_refs), or None."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    meta = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)  # `pattern` must compile
    error = jsonschema.exceptions.best_match(meta.iter_errors(schema))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"format{where}: {error.message}"
    if schema_regex.uses_untimed_regex(schema):
        return "format: unevaluatedProperties together with patternProperties is not supported"
    return schema_refs.ref_fault(schema)


def with_instruction(messages: list[Message], fmt: object) -> list[Message]:
    """The conversation with the format instruction added to the last user turn."""
    out = list(messages)
    for index in range(len(out) - 1, -1, -1):
        if out[index].role == "user":
            m = out[index]
            out[index] = Message(m.role, f"{m.content}\n\n{instruction(fmt)}", m.images, m.tool_calls,
                                 m.tool_name, m.thinking)
            break
    return out


def retry_messages(messages: list[Message], answer: str, reason: str, fmt: object) -> list[Message]:
    return messages + [Message("assistant", answer),
                       Message("user", f"That reply was not accepted: {reason}. {instruction(fmt)}")]
