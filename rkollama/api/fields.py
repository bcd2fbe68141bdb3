"""Typed access to JSON request bodies, with Ollama's leniency (unknown fields ignored, field
names case-insensitive) and its strictness (a wrong type is a 400 that names the field)."""

import json
import re
from typing import Any, cast

from rkollama.core.types import JSONObject
from rkollama.errors import BadRequest

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request may have (tool and format schemas included):
deeper documents are refused before anything recurses over them."""
MAX_CONTAINERS = 50_000
"""Most arrays and objects in one body. Decoded, each costs Python 60–250 bytes: a body of
tiny objects (`[{}, {}, …]`, 100,000 one-word messages) would otherwise cost 16 times its size
in memory; no conversation a board can hold has this many messages."""
MAX_VALUES = 300_000
"""Most JSON values (strings, numbers, …) in one body, for the same reason (a `context` of token
ids, the longest list a client sends, is at most a window long)."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STRUCTURE = re.compile(rb'\\.|["\[\]{},]', re.DOTALL)  # an escape pair, a quote, a bracket, a comma

_GO_TYPES = {bool: "bool", str: "string", list: "array", dict: "object", int: "number", float: "number"}


def parse_body(raw: bytes) -> JSONObject:
    """Decode a request body; empty → `missing request body`; non-object JSON → 400."""
    if not raw or not raw.strip():
        raise BadRequest("missing request body")
    _check_shape(raw)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if body is None:
        body = {}  # Go decodes `null` into a struct as nothing at all: the fields' checks answer
    if not isinstance(body, dict):
        raise BadRequest(f"json: cannot unmarshal {_json_kind(body)} into Go value of type request")
    if _SURROGATE_ESCAPE.search(raw):
        body = _replace_lone_surrogates(body)
    return cast(JSONObject, body)


def _check_shape(raw: bytes) -> None:
    """Refuse, before decoding, nesting deeper than MAX_DEPTH and more than MAX_CONTAINERS arrays
    and objects or MAX_VALUES values, counting brackets and commas outside strings in one pass."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and raw.count(b",") < MAX_VALUES:
        return  # none of the limits can be reached: no scan
    depth = containers = values = 0
    in_string = False
    for match in _STRUCTURE.finditer(raw):
        token = match.group()
        if in_string:
            if token == b'"':
                in_string = False
        elif token == b'"':
            in_string = True
        elif token == b",":
            values += 1
        elif token in (b"[", b"{"):
            depth += 1
            containers += 1
            if depth > MAX_DEPTH:
                raise BadRequest(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1
    if containers > MAX_CONTAINERS:
        raise BadRequest(f"request too large: {containers} JSON arrays and objects "
                         f"(at most {MAX_CONTAINERS})")
    if values >= MAX_VALUES:
        raise BadRequest(f"request too large: more than {MAX_VALUES} JSON values")


def _replace_lone_surrogates(value: Any) -> Any:
    """Lone UTF-16 surrogates (`"\\ud800"`) become U+FFFD, as Go's JSON decoder makes them."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


class Fields:
    """Case-insensitive view of a JSON object with typed getters."""

    def __init__(self, data: JSONObject, type_name: str):
        self.type_name = type_name
        self._data: dict[str, object] = {}
        for key, value in data.items():
            self._data.setdefault(str(key).lower(), value)

    def has(self, name: str) -> bool:
        return self._data.get(name.lower()) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        value = self._data.get(name.lower())
        return default if value is None else value

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        """The value if it has type `kind` (a type or tuple); None/absent → `default`."""
        value = self._data.get(name.lower())
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            wanted = _GO_TYPES.get(kinds[0], kinds[0].__name__)
            raise BadRequest(f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                             f"{self.type_name}.{name} of type {wanted}")
        return value


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"
