"""Observability for the server: OpenTelemetry traces, Prometheus metrics, structured logs,
and the execution trace view. docs/observability.md says how to wire it.

`Observability.from_config(config)` builds what the config turns on; the server then asks it
for the engine's instrumentation (None when traces and metrics are both off, so the engine
pays nothing) and for its interceptor.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agentrun.server.observability.context import (
    current_traceparent,
    metadata_traceparent,
    trace_id_of,
    valid_traceparent,
)
from agentrun.server.observability.logging import (
    JsonFormatter,
    TextFormatter,
    add_secrets,
    configure_logging,
)
from agentrun.server.observability.trace_view import TraceView, build_trace

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine
    from agentrun.server.observability.instrumentation import Telemetry
    from agentrun.server.observability.interceptor import TelemetryInterceptor
    from agentrun.server.observability.metrics import Metrics

# Loaded on first use: with tracing and metrics off the server imports neither OpenTelemetry
# nor prometheus_client (and runs without them installed).
_LAZY = {
    "Metrics": "metrics",
    "Telemetry": "instrumentation",
    "TelemetryInterceptor": "interceptor",
    "make_provider": "tracing",
    "parse_traceparent": "tracing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class Observability:
    """The tracer provider (None: tracing off), the metrics (None: off) and the hooks over both."""

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        metrics: Metrics | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
    ) -> None:
        self.tracer_provider = tracer_provider
        self.metrics = metrics
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.telemetry: Telemetry | None = None
        if tracer_provider is not None or metrics is not None:
            from agentrun.server.observability.instrumentation import Telemetry

            self.telemetry = Telemetry(tracer_provider=tracer_provider, metrics=metrics)

    @classmethod
    def from_config(cls, config: Any, *, span_processors: Iterable[Any] = ()) -> Observability:
        provider = None
        if config.tracing != "none" or span_processors:
            from agentrun.server.observability.tracing import make_provider

            provider = make_provider(
                exporter=config.tracing,
                endpoint=config.otlp_endpoint,
                sample_ratio=config.trace_sample_ratio,
                service_name=config.service_name,
                processors=span_processors,
            )
        metrics = None
        if config.metrics_port is not None:
            from agentrun.server.observability.metrics import Metrics

            metrics = Metrics()
        add_secrets(k.key for k in config.api_keys)
        return cls(
            tracer_provider=provider,
            metrics=metrics,
            metrics_port=config.metrics_port,
            metrics_host=config.metrics_host,
        )

    @property
    def tracing(self) -> bool:
        return self.tracer_provider is not None

    def instrumentation(self) -> Telemetry | None:
        """What to pass as `EngineConfig(instrumentation=...)`."""
        return self.telemetry

    def interceptor(self) -> TelemetryInterceptor | None:
        if self.tracer_provider is None and self.metrics is None:
            return None
        from agentrun.server.observability.interceptor import TelemetryInterceptor

        return TelemetryInterceptor(tracer_provider=self.tracer_provider, metrics=self.metrics)

    def attach(self, engine: Engine) -> None:
        """Reads the engine's scheduler gauges at scrape time; masks its secrets in logs."""
        if self.metrics is not None:
            self.metrics.watch_engine(engine)
        add_secrets(engine.secrets.values())

    def start(self) -> int | None:
        """Starts the `/metrics` endpoint when a port is configured; returns the bound port."""
        if self.metrics is not None and self.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.metrics_port, self.metrics_host)
        return self.metrics_port

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


__all__ = [
    "JsonFormatter",
    "Metrics",
    "Observability",
    "Telemetry",
    "TelemetryInterceptor",
    "TextFormatter",
    "TraceView",
    "add_secrets",
    "build_trace",
    "configure_logging",
    "current_traceparent",
    "make_provider",
    "metadata_traceparent",
    "parse_traceparent",
    "trace_id_of",
    "valid_traceparent",
]
