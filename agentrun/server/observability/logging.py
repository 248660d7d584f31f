"""Structured logs: one JSON object per line on stderr (readable text on a terminal).

Every line has `time`, `level`, `logger`, `message`, and, when known, `tenant`, `workflow`,
`execution`, `node`, `attempt`, `trace_id`, `span_id`. The execution fields come from context
variables that the instrumentation sets inside each node attempt's task (so a tool's own log
lines carry them); the tenant comes from the auth interceptor; the trace id from the current
OpenTelemetry span. Secret values (engine secrets, API keys) are masked in every message.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext

# (tenant, workflow, execution id, node key, attempt) of the node attempt running in this task.
log_context: contextvars.ContextVar[tuple[str, str, str, str, int] | None] = contextvars.ContextVar(
    "agentrun_log_context", default=None
)

MASK = "[REDACTED]"
FORMATS = ("auto", "json", "text")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


class _Scrubber:
    """Masks secret values (at least 4 characters) and bearer tokens in log text."""

    def __init__(self) -> None:
        self._pattern: re.Pattern[str] | None = None
        self._values: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        self._values.update(v for v in values if isinstance(v, str) and len(v) >= 4)
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "earer" in text:
            text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
        return text


SCRUB = _Scrubber()


def add_secrets(values: Iterable[str]) -> None:
    """Values never to print (engine secrets, API keys)."""
    SCRUB.add(values)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx = log_context.get()
    if ctx is not None:
        out["tenant"], out["workflow"], out["execution"], out["node"], out["attempt"] = ctx
    else:
        tenant = _tenant()
        if tenant:
            out["tenant"] = tenant
    for name in ("tenant", "workflow", "execution", "node"):
        value = getattr(record, name, None)  # `extra={...}` wins
        if value is not None:
            out[name] = value
    span = _span_context()
    if span is not None:
        out["trace_id"] = f"{span.trace_id:032x}"
        out["span_id"] = f"{span.span_id:016x}"
    return out


def _tenant() -> str | None:
    """The caller's tenant inside an RPC (set by the auth interceptor); None elsewhere."""
    from agentrun.server.auth import call_tenant

    return call_tenant()


_get_current_span: Callable[[], Span | None] | None = None


def _no_span() -> None:
    return None


def _span_context() -> SpanContext | None:
    global _get_current_span
    if _get_current_span is None:
        try:
            from opentelemetry.trace import get_current_span
        except ImportError:  # tracing needs it; logs do without
            _get_current_span = _no_span
        else:
            _get_current_span = get_current_span
    span = _get_current_span()
    if span is None:
        return None
    ctx = span.get_span_context()
    return ctx if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": SCRUB(record.getMessage()),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = SCRUB(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = SCRUB(super().format(record))
        extra = " ".join(
            f"{k}={v}" for k, v in _fields(record).items() if k != "span_id" and v not in ("", None)
        )
        return f"{line} [{extra}]" if extra else line


def configure_logging(
    level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None
) -> logging.Handler:
    """Sends every log record to `stream` (stderr): JSON lines, or text when `fmt` is
    `text` or `auto` on a terminal. Replaces the root logger's handlers."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter
    return handler
