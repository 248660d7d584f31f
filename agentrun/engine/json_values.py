"""Which JSON values every store can hold the same way.

JSON has no NaN or infinities, and PostgreSQL cannot hold a NUL character (U+0000) in text or
JSONB, while SQLite and memory take both: a value with either, produced at run time by an
expression or returned by a tool, would be stored on one backend and make the commit fail on
another (leaving the execution stuck). The API refuses such values in requests
(agentrun.engine.message_checks); this refuses them where a step produces them, so the step
fails with a clear error instead, the same on every backend.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["unstorable"]


def unstorable(value: Any, path: str = "") -> str | None:
    """Why `value` cannot be stored on every backend (the first problem, with its place under
    `path`), or None. Iterative: no value is too deep for it."""
    if _plainly_storable(value):
        return None
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{_at(where)}{item} is not a JSON number (no NaN or infinities)"
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{_at(where)}a string holds a NUL character (\\u0000)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{_at(where)}a key holds a NUL character (\\u0000)"
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def _plainly_storable(value: Any) -> bool:
    """True when `value` surely has no problem `unstorable` looks for, judged without the
    places it would name (most values); False says nothing: `unstorable` walks it then."""
    stack = [value]
    while stack:
        item = stack.pop()
        t = type(item)
        if t is str:
            if "\x00" in item:
                return False
        elif t is dict:
            for key in item:
                if type(key) is not str or "\x00" in key:
                    return False
            stack.extend(item.values())
        elif t is int or t is bool or item is None:
            continue
        elif t is float:
            if not math.isfinite(item):
                return False
        elif t is list:
            stack.extend(item)
        else:
            return False
    return True


def _at(where: str) -> str:
    return f"at {where[:200]}: " if where else ""
