"""The regular-expression keywords of JSON Schema, matched with a time limit.

A request's `format` schema is hostile input, and its `pattern`s are matched against the
model's answer: on Python's backtracking `re` a pattern such as `(a|a)+$` takes exponential time
and holds the interpreter while it does. `pattern`, `patternProperties` and
`additionalProperties` (which consults patternProperties) are therefore checked here with the
`regex` module and a timeout; a match that runs out of time is a validation error like any other.
"""

from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import ValidationError

from rkollama.core.schema_refs import subschemas
from rkollama.core.types import JSONObject

MATCH_TIMEOUT_S = 0.1
"""Longest one pattern may take against one string, in seconds."""


class _TooSlow(Exception):
    pass


def _search(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        raise _TooSlow(pattern) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        if not _search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
    except _TooSlow:
        yield ValidationError(f"matching {pattern!r} took longer than {MATCH_TIMEOUT_S} s")


def _pattern_properties(validator: Any, patterns: JSONObject, instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            try:
                matched = _search(pattern, key)
            except _TooSlow:
                yield ValidationError(f"matching {pattern!r} took longer than {MATCH_TIMEOUT_S} s")
                return
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any,
                           schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = []
    for key in instance:
        if key in known:
            continue
        try:
            if any(_search(pattern, key) for pattern in patterns):
                continue
        except _TooSlow as slow:
            yield ValidationError(f"matching {slow.args[0]!r} took longer than {MATCH_TIMEOUT_S} s")
            return
        extras.append(key)
    if allowed is False and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, extras))})")
    elif isinstance(allowed, dict):
        for key in extras:
            yield from validator.descend(instance[key], allowed, path=key)


_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
             "additionalProperties": _additional_properties}
_TIMED = MappingProxyType({
    cls: jsonschema.validators.extend(cls, _KEYWORDS)
    for cls in (jsonschema.Draft4Validator, jsonschema.Draft6Validator, jsonschema.Draft7Validator,
                jsonschema.Draft201909Validator, jsonschema.Draft202012Validator)})


def timed(cls: Any) -> Any:
    """`cls` (a jsonschema validator class) with the regex keywords matched under a time limit."""
    return _TIMED.get(cls, _TIMED[jsonschema.Draft202012Validator])


def uses_untimed_regex(schema: object) -> bool:
    """True when `schema` combines `unevaluatedProperties` with `patternProperties`: jsonschema
    matches those with `re`, outside any time limit, so such a schema is refused."""
    nodes = list(subschemas(schema))
    return any("unevaluatedProperties" in node for node in nodes) and \
        any("patternProperties" in node for node in nodes)
