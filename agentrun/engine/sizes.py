"""How large the data of an execution may grow (issue 13, item 2).

Without bounds, one pass node (`${{ input.l.map(x, input.s) }}`) stored a 100 MB output, and
from then on GetExecution answered RESOURCE_EXHAUSTED for that execution forever. Every value a
step produces is measured before it is stored: an input, a signal's or an event's data, a node's
output (after its `output` transform), the variables its `export` sets, the execution's output.
Over the limit (`data_limits`, agentrun.engine.limits) the value is never stored: a node fails
with `output_too_large` or `input_too_large`, a request is refused, naming the size and the limit.

Sizes are the bytes of the value's compact JSON, measured by a walk that stops as soon as the
limit is passed, so measuring a huge value costs no more than measuring one at the limit.
"""

from __future__ import annotations

import json
from typing import Any

from agentrun.engine import limits
from agentrun.engine.errors import Diagnostic, InvalidInput

# An error (message and details) a tool or agent returned is cut to this many bytes of JSON:
# errors are stored and returned with every execution read.
MAX_ERROR_BYTES = 16 * 1024
MAX_ERROR_MESSAGE = 4096


def json_size(value: Any, limit: int) -> int:
    """Bytes of `value` as compact JSON (UTF-8), exact up to `limit`; past it, some number
    above `limit` (the measure stops there).

    Large collections are encoded by the C encoder a chunk at a time (chunks doubling), so a
    list of 200,000 numbers costs about what `json.dumps` costs, and a 100 MB list stops after
    its first chunks; a collection of few parts is measured part by part, so one huge part is
    walked into rather than encoded whole."""
    try:
        return _size(value, limit)
    except (RecursionError, ValueError):
        return _walk(value, limit)


_SMALL = 64


# One encoder: `json.dumps` with options builds a new one per call, which cost more than
# encoding the small values most steps produce.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _encoded(value: Any) -> int:
    text = _ENCODER.encode(value)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _size(value: Any, limit: int) -> int:
    t = type(value)
    if t is not dict and t is not list and t is not tuple:
        return _encoded(value)
    items: Any = list(value.items()) if t is dict else value
    n = len(items)
    total = 2 + max(n - 1, 0)
    if n <= _SMALL:
        for item in items:
            if t is dict:
                key, item = item
                total += _encoded(key) + 1
            total += _size(item, limit - total)
            if total > limit:
                break
        return total
    i, step = 0, _SMALL
    while i < n:
        chunk = items[i : i + step]
        # A chunk encodes as [a,b,...]: its brackets and commas are counted above.
        total += _encoded(dict(chunk) if t is dict else chunk) - 2 - (len(chunk) - 1)
        if total > limit:
            break
        i, step = i + step, min(step * 2, 65536)
    return total


def _walk(value: Any, limit: int) -> int:
    """The same measure without recursion, for values nested deeper than the encoder goes."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        t = type(item)
        if t is str:
            total += (
                len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
            ) + 2
        elif t is dict:
            total += 2 + max(len(item) * 2 - 1, 0)  # braces, colons and commas
            stack.extend(item.keys())
            stack.extend(item.values())
        elif t is list or t is tuple:
            total += 2 + max(len(item) - 1, 0)
            stack.extend(item)
        elif item is None or t is bool:
            total += 4 if item is None or item is True else 5
        elif t is int or t is float:
            total += len(repr(item))
        else:
            total += len(str(item)) + 2
        if total > limit:
            return total
    return total


def _describe(size: int, limit: int) -> str:
    shown = f"{size} bytes" if size <= limit * 2 else f"more than {limit * 2} bytes"
    return f"{shown}; the limit is {limit} bytes"


def _surely_within(value: Any, limit: int) -> bool:
    """True when `value`'s JSON is surely at most `limit` bytes, judged from an upper bound
    over at most `_SMALL` parts (a character is at most 6 bytes, `\\u001f`; a float at most
    24; an int within 64 bits at most 20): most values a step produces are small, and this
    spares them the encoder. False says nothing: the exact measure decides."""
    stack = [value]
    total = parts = 0
    while stack:
        item = stack.pop()
        parts += 1
        t = type(item)
        if t is str:
            total += 6 * len(item) + 2
        elif t is int:
            if not -(2**63) <= item < 2**63:
                return False
            total += 20
        elif t is float or t is bool or item is None:
            total += 24
        elif t is dict:
            total += 2 + 2 * len(item)
            for key, child in item.items():
                if type(key) is not str:
                    return False
                total += 6 * len(key) + 2
                stack.append(child)
        elif t is list or t is tuple:
            total += 2 + len(item)
            stack.extend(item)
        else:
            return False
        if total > limit or parts > _SMALL:
            return False
    return True


def oversize(value: Any, limit: int) -> int | None:
    """The size of `value` when it is over `limit`, else None."""
    if _surely_within(value, limit):
        return None
    size = json_size(value, limit)
    return size if size > limit else None


def _node_error(type_: str, what: str, value: Any, setting: str) -> dict[str, Any] | None:
    limit = getattr(limits.current(), setting)
    size = oversize(value, limit)
    if size is None:
        return None
    return {
        "type": type_,
        "message": f"{what} is {_describe(size, limit)} (data_limits.{setting}); it was not stored",
        "details": {"size": size, "limit": limit},
    }


def output_error(what: str, value: Any) -> dict[str, Any] | None:
    """A node error when `value` (what a node produced) is over `data_limits.output_bytes`."""
    return _node_error("output_too_large", what, value, "output_bytes")


def node_input_error(value: Any) -> dict[str, Any] | None:
    """A node error when what its incoming edges mapped is over `data_limits.input_bytes`."""
    return _node_error("input_too_large", "the node's input", value, "input_bytes")


def check_request(field: str, value: Any, setting: str) -> None:
    """Refuses a request whose `field` (input, data) is over `data_limits.<setting>`."""
    limit = getattr(limits.current(), setting)
    size = oversize(value, limit)
    if size is not None:
        raise InvalidInput(
            [Diagnostic(field, f"is {_describe(size, limit)} (data_limits.{setting})")]
        )


def bound_event(type_: str, data: Any) -> Any:
    """An emitted event's data, or a note in its place when it is over `data_limits.event_bytes`."""
    limit = limits.current().event_bytes
    size = oversize(data, limit)
    if size is None:
        return data
    return {
        "error": "event_too_large",
        "message": f"the {type_} event's data was {_describe(size, limit)} (data_limits.event_bytes); it was not stored",
        "size": size,
        "limit": limit,
    }


def bound_error(err: Any) -> Any:
    """A failure's error, cut to MAX_ERROR_BYTES: its message shortened, its details dropped."""
    if not isinstance(err, dict) or oversize(err, MAX_ERROR_BYTES) is None:
        return err
    message = str(err.get("message", ""))
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "…"
    out = {k: v for k, v in err.items() if k not in ("message", "details")}
    out["message"] = message
    out["details"] = {"truncated": True}
    if oversize(out, MAX_ERROR_BYTES) is not None:  # the other keys were large too
        out = {
            "type": str(err.get("type", "internal"))[:200],
            "message": message,
            "details": {"truncated": True},
        }
    return out
