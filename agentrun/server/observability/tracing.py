"""OpenTelemetry traces: the tracer provider from config, and W3C trace context helpers.

Spans made here (see `agentrun.server.observability.instrumentation` and `.interceptor`):

    <service>/<method>            SERVER  one per RPC; continues the caller's `traceparent`
      execution <workflow>        INTERNAL  one per execution (run) in this process
        tool <name> | agent <provider/model> | workflow <name>
                                  CLIENT/INTERNAL  one per node attempt (= one tool/LLM call)
          execution <child>       a `workflow` node's child execution
          ...                     whatever the tool does (HTTP client spans)

The RPC that starts an execution stores its span context as the execution's
`labels["traceparent"]`, so the execution span (made when the engine starts running it, or
after a restart) joins the caller's trace, and the trace id is kept with the execution.
Sampling is `ParentBased(TraceIdRatioBased(ratio))`: a caller's sampled flag wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from agentrun.server.observability.context import (  # noqa: F401 - re-exported
    current_traceparent,
    metadata_traceparent,
    trace_id_of,
    traceparent_parts,
)

log = logging.getLogger("agentrun.server.observability")

EXPORTERS = ("none", "console", "otlp")
INSTRUMENTATION_NAME = "agentrun"


def make_provider(
    *,
    exporter: str = "none",
    endpoint: str | None = None,
    sample_ratio: float = 1.0,
    service_name: str = "agentrun",
    processors: Iterable[SpanProcessor] = (),
) -> TracerProvider | None:
    """A tracer provider exporting to `exporter` (none, console, otlp), plus `processors`
    (tests pass a SimpleSpanProcessor over an InMemorySpanExporter). None when nothing
    would receive spans: tracing is then off and costs nothing."""
    processors = list(processors)
    if exporter not in EXPORTERS:
        raise ValueError(f"tracing exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if exporter == "none" and not processors:
        return None
    if not 0.0 <= sample_ratio <= 1.0:
        raise ValueError(f"trace sample ratio {sample_ratio} is not between 0 and 1")
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=Resource.create({"service.name": service_name}),
    )
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # No endpoint: OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317.
        otlp = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(otlp))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


# W3C trace context ------------------------------------------------------------------
def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context of a `traceparent` header value; None when it is invalid."""
    parts = traceparent_parts(value)
    if parts is None:
        return None
    trace_id, span_id, flags = parts
    return SpanContext(
        trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(flags & 0x01)
    )


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


def context_from_traceparent(value: str | None) -> Any:
    """An OpenTelemetry Context whose parent is the remote span in `value`, or None."""
    ctx = parse_traceparent(value)
    if ctx is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""
