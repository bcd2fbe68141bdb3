"""`$ref`s of a request's `format` schema: each must point inside the schema (nothing is ever
fetched), and no chain of them may come back to where it started without descending into a part
of the value (`{"$ref": "#"}` would make validation recurse until the interpreter gives up)."""

from collections.abc import Iterator

import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from rkollama.core.types import JSONObject

# Keywords whose subschemas apply to the same value (no descent into a property or an item).
_SAME_VALUE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_SCHEMAS = ("not", "if", "then", "else")
_SAME_VALUE_MAPS = ("dependentSchemas", "dependencies")
MAX_CHAIN = 32
"""Longest chain of references and combinators applied to one value (validation recurses once
per link)."""


def ref_fault(schema: object) -> str | None:
    """Why the schema's references cannot be followed, in words for a 400, or None."""
    if not isinstance(schema, dict):
        return None
    resolver = referencing.Registry().with_resource(
        "", referencing.Resource.from_contents(schema, default_specification=DRAFT202012)).resolver()
    targets: dict[int, list[object]] = {}
    for node in subschemas(schema):
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str):
                try:
                    targets.setdefault(id(node), []).append(resolver.lookup(ref).contents)
                except referencing.exceptions.Unresolvable:
                    return f"format: {keyword} {ref!r} does not point inside the schema"
    return _chain_fault(schema, targets)


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                "dependencies")
"""Keywords whose values map names to schemas (a property may be called "const")."""
_NOT_SCHEMAS = ("const", "enum", "default", "examples")
"""Keywords whose values are data, not schemas: a `$ref` key inside them means nothing."""


def subschemas(node: object) -> Iterator[JSONObject]:
    """Every mapping in the schema that is a schema or holds schemas, iteratively (a deep schema
    cannot exhaust the stack)."""
    stack: list[tuple[object, bool]] = [(node, False)]  # (item, is it a name -> schema map)
    while stack:
        item, is_map = stack.pop()
        if isinstance(item, dict):
            if not is_map:
                yield item
            stack.extend((value, not is_map and key in _SCHEMA_MAPS) for key, value in item.items()
                         if is_map or key not in _NOT_SCHEMAS)
        elif isinstance(item, list):
            stack.extend((value, False) for value in item)


def _same_value_children(node: JSONObject, targets: dict[int, list[object]]) -> list[JSONObject]:
    children: list[object] = list(targets.get(id(node), []))
    for key in _SAME_VALUE_LISTS:
        if isinstance(node.get(key), list):
            children.extend(node[key])
    for key in _SAME_VALUE_SCHEMAS:
        if key in node:
            children.append(node[key])
    for key in _SAME_VALUE_MAPS:
        if isinstance(node.get(key), dict):
            children.extend(node[key].values())
    return [child for child in children if isinstance(child, dict)]


def _chain_fault(schema: JSONObject, targets: dict[int, list[object]]) -> str | None:
    """A cycle, or a chain longer than MAX_CHAIN, among the subschemas that apply to one value
    (iterative depth-first search), in words; or None."""
    done: set[int] = set()
    for start in subschemas(schema):
        if id(start) in done:
            continue
        on_path: set[int] = {id(start)}
        stack: list[tuple[JSONObject, Iterator[JSONObject]]] = [
            (start, iter(_same_value_children(start, targets)))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(id(node))
                done.add(id(node))
                continue
            if id(child) in on_path:
                ref = node.get("$ref", "#")
                return f"format: $ref {ref!r} refers back to itself without reaching a value"
            if len(stack) >= MAX_CHAIN:
                return f"format: more than {MAX_CHAIN} references and combinators apply to one value"
            if id(child) not in done:
                on_path.add(id(child))
                stack.append((child, iter(_same_value_children(child, targets))))
    return None
