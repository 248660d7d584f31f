"""The telemetry interceptor: a server span per RPC (continuing the caller's W3C trace
context from the `traceparent` metadata entry) and the RPC metrics (count, latency, in
flight, by service, method and status code).

It is the outermost interceptor, so it sees every call, refused ones included (draining,
auth, rate limits), with the status code the caller gets. Health checks get metrics but
no spans (probes would drown the traces).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentrun.server._wrap import CachingInterceptor, replace_behavior
from agentrun.server.interceptors import final_status
from agentrun.server.observability.context import metadata_traceparent
from agentrun.server.observability.metrics import Metrics
from agentrun.server.observability.tracing import INSTRUMENTATION_NAME, context_from_traceparent

UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Codes that are the server's fault (OpenTelemetry's gRPC conventions): the span is an error.
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class TelemetryInterceptor(CachingInterceptor):
    def __init__(self, *, tracer_provider: Any = None, metrics: Metrics | None = None) -> None:
        super().__init__()
        self._tracer = (
            tracer_provider.get_tracer(INSTRUMENTATION_NAME)
            if tracer_provider is not None
            else None
        )
        self._metrics = metrics

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        service, _, name = method.lstrip("/").rpartition("/")
        tracer = None if method.startswith(UNTRACED_PREFIXES) else self._tracer
        metrics = self._metrics
        in_flight = metrics.rpc_in_flight.labels(service, name) if metrics is not None else None
        span_name = method.lstrip("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, Any]:
            if in_flight is not None:
                in_flight.inc()
            if tracer is None:
                return None, None
            parent = context_from_traceparent(metadata_traceparent(context.invocation_metadata()))
            span = tracer.start_span(
                span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
            return span, otel_context.attach(trace.set_span_in_context(span))

        def end(
            context: grpc.aio.ServicerContext[Any, Any],
            started: float,
            span: Any,
            token: Any,
            exc: BaseException | None,
        ) -> None:
            code = final_status(context, exc)
            if in_flight is not None:
                in_flight.inc(-1)
            if metrics is not None:
                count, latency = metrics.rpc_children(service, name, code.name)
                count.inc()
                latency.observe(time.perf_counter() - started)
            if span is not None:
                otel_context.detach(token)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code.name in _SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                span.end()

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(behavior):

                async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                    started = time.perf_counter()
                    span, token = begin(context)
                    exc: BaseException | None = None
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except BaseException as e:
                        exc = e
                        raise
                    finally:
                        end(context, started, span, token, exc)

                return gen

            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                span, token = begin(context)
                exc: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    end(context, started, span, token, exc)

            return call

        return replace_behavior(handler, wrap)
