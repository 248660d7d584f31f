"""W3C trace context helpers that need no OpenTelemetry: the server stores a caller's
`traceparent` on an execution even when it does not trace, and runs without the
OpenTelemetry packages when tracing is off."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# version-traceid-parentid-flags (W3C Trace Context, version 00).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


def traceparent_parts(value: str | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a valid `traceparent` value, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(match.group(4), 16)


def valid_traceparent(value: str | None) -> bool:
    return traceparent_parts(value) is not None


def trace_id_of(traceparent: str | None) -> str:
    """The 32-hex trace id in a traceparent value, or ''."""
    parts = traceparent_parts(traceparent)
    return f"{parts[0]:032x}" if parts is not None else ""


def metadata_traceparent(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The `traceparent` entry of gRPC invocation metadata (keys are lower case)."""
    for key, value in metadata or ():
        if key == "traceparent":
            return value.decode() if isinstance(value, bytes) else value
    return None


def current_traceparent() -> str | None:
    """The traceparent of the OpenTelemetry span current in this context (None when there is
    none, or OpenTelemetry is not installed)."""
    span = _current_span()
    if span is None:
        return None
    ctx = span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


_SPAN_GETTER: list[Any] = []  # [opentelemetry.trace.get_current_span or None], once looked up


def _current_span() -> Any:
    """opentelemetry.trace.get_current_span, imported on first use (an import statement per
    call costs more than the lookup it guards)."""
    if not _SPAN_GETTER:
        try:
            from opentelemetry import trace
        except ImportError:
            _SPAN_GETTER.append(None)
        else:
            _SPAN_GETTER.append(trace.get_current_span)
    return _SPAN_GETTER[0]
