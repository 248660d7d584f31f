"""Numbers typed by a JSON Schema, as CEL needs them (FORMAT.md, "Expressions").

CEL never mixes int and double: `input.price + 0.5` fails on an int. Data arriving as JSON or a
protobuf `Struct` carries no such type (a `Struct` has only doubles; agentrun reads a whole one
as an int), so where `input_schema` declares `type: number` the value becomes a double, and where
it declares `type: integer` a whole double becomes an int, as Kubernetes' CEL does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


def coerce_numbers(value: Any, schema: Any) -> Any:
    """`value` with its numbers typed as `schema` declares them; a validated value only (the
    walk trusts that a declared shape is the value's shape). Unchanged parts are not copied."""
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, bool):
        return value
    types = _types(schema)
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    if isinstance(value, float) and types == {"integer"} and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        subs = (
            (key, props[key] if isinstance(props, Mapping) and key in props else extra)
            for key in value
        )
        return _rebuild(value, subs)
    if isinstance(value, list):
        return _rebuild(value, ((i, _item_schema(schema, i)) for i in range(len(value))))
    return value


def _item_schema(schema: Mapping[str, Any], i: int) -> Any:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    if isinstance(prefix, list) and i < len(prefix):
        return prefix[i]
    if isinstance(items, list):  # draft 4-7 tuple form
        return items[i] if i < len(items) else schema.get("additionalItems")
    return items


def _rebuild(value: Any, subs: Any) -> Any:
    """`value` (a dict or list) with each part coerced; copied only when a part changed."""
    out = value
    for key, sub in subs:
        item = value[key]
        new = coerce_numbers(item, sub)
        if new is not item:
            if out is value:
                out = value.copy()
            out[key] = new
    return out
