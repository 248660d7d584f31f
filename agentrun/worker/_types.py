"""What a tool function receives and may raise, and JSON values on the wire."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

__all__ = ["Call", "ToolDefinition", "ToolError", "from_value", "to_value"]

# Integers beyond this lose precision as doubles: they stay floats.
_MAX_EXACT = 2**53


class ToolError(Exception):
    """Raised by a tool to fail the call with a typed error: `type` is what retry policies,
    `non_retryable` and handlers match (`payments.declined`); `retryable=False` makes the
    attempt final whatever the policy says; `retry_after` (seconds) delays the next one."""

    def __init__(
        self,
        type: str,
        message: str = "",
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message or type)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.details = dict(details or {})


@dataclass(slots=True)
class Call:
    """One call of a tool: who it is for, and a way to report progress."""

    call_id: str
    tool: str
    execution_id: str
    node_id: str
    attempt: int
    # `EXECUTION/NODE/ATTEMPT` (with the map index before the attempt): the same when a call
    # is delivered again, another for another attempt. Deduplicate side effects on it.
    idempotency_key: str
    # Epoch seconds when the node's timeout fires; None: no timeout.
    deadline: float | None
    traceparent: str
    labels: dict[str, str]
    _report: Callable[[str, float, float | None, str | None], None] = field(
        repr=False, default=lambda *a: None
    )
    # Set when the server withdraws the call (the node timed out or was cancelled, or the
    # lease was lost); an async tool is cancelled too, a sync one should look at it.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Reports how far the call got (a `tool.progress` event of the node)."""
        self._report(self.call_id, progress, total, message)


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    args_schema: Mapping[str, Any] | None = None
    result_schema: Mapping[str, Any] | None = None
    irreversible: bool = False
    idempotent: bool = False
    max_concurrent_calls: int = 0
    version: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @property
    def takes_call(self) -> bool:
        """Whether the function takes the Call as well as the arguments: a second positional
        parameter without a default, one named `call`, or `*args`."""
        try:
            parameters = list(inspect.signature(self.fn).parameters.values())
        except (TypeError, ValueError):
            return True
        positional = [
            p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p for p in positional if p.default is p.empty]
        return (
            len(required) >= 2
            or any(p.name == "call" for p in positional[1:])
            or any(p.kind is p.VAR_POSITIONAL for p in parameters)
        )

    async def run(self, args: Any, call: Call) -> Any:
        """The function's result: awaited, or run in a thread when it is not async."""
        params = (args, call) if self.takes_call else (args,)
        if self.is_async:
            return await self.fn(*params)
        result = await asyncio.to_thread(self.fn, *params)
        if isinstance(result, Awaitable):
            return await result
        return result


def to_value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    _set(value, obj)
    return value


def _set(target: struct_pb2.Value, obj: Any) -> None:
    if obj is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        target.bool_value = obj
    elif isinstance(obj, (int, float)):
        if isinstance(obj, float) and not math.isfinite(obj):
            raise ValueError(f"{obj} is not a JSON number")
        target.number_value = obj
    elif isinstance(obj, str):
        target.string_value = obj
    elif isinstance(obj, Mapping):
        struct = target.struct_value
        struct.SetInParent()
        for key, item in obj.items():
            _set(struct.fields[str(key)], item)
    elif isinstance(obj, (list, tuple)):
        values = target.list_value
        values.SetInParent()
        for item in obj:
            _set(values.values.add(), item)
    else:
        raise TypeError(f"{type(obj).__name__} is not a JSON value")


def from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) <= _MAX_EXACT else n
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return None
