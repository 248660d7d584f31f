"""The engine's Instrumentation hooks, implemented with OpenTelemetry spans, Prometheus
metrics and the log context. Built by `Observability` when traces or metrics are on; with
both off the engine gets no instrumentation at all (and pays one `is None` check per call).

Every hook runs on the engine's loop, must not block and must not raise: each one catches
its own errors and logs them once.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentrun.engine.instrument import Instrumentation, current_traceparent
from agentrun.server.observability.logging import log_context
from agentrun.server.observability.metrics import BREAKER_STATES, Metrics
from agentrun.server.observability.tracing import (
    INSTRUMENTATION_NAME,
    context_from_traceparent,
    format_traceparent,
)
from agentrun.storage.machines import EntryKind, HistoryRecord, InstanceRecord
from agentrun.storage.records import EventRecord, ExecutionRecord

log = logging.getLogger("agentrun.server.observability")


_TERMINAL_NODE = frozenset({"node.succeeded", "node.failed", "node.skipped", "node.cancelled"})
_ENDS_ATTEMPT = frozenset(
    {
        "node.succeeded",
        "node.failed",
        "node.retrying",
        "node.cancelled",
        "node.skipped",
        "node.escalated",
    }
)
_SPAN_KIND = {"tool": SpanKind.CLIENT, "agent": SpanKind.CLIENT}
_USAGE_KEYS = {
    "prompt_tokens": "prompt",
    "input_tokens": "prompt",
    "completion_tokens": "completion",
    "output_tokens": "completion",
    # Part of the prompt tokens, read from the provider's prompt cache.
    "cached_tokens": "cached",
}


class _Execution:
    """What the hooks keep about one running execution."""

    __slots__ = ("agent_spans", "context", "queued", "span", "t0", "targets", "workflow")

    def __init__(self, workflow: str) -> None:
        self.span: Any = None
        self.context: Any = None
        self.t0 = time.perf_counter()
        self.workflow = workflow
        # node key -> the last call's target (provider/model for agents), for usage metrics
        self.targets: dict[str, str] = {}
        # node key -> (queued_seconds, rate_limited) of the attempt about to start
        self.queued: dict[str, tuple[float, bool]] = {}
        # node key -> an agent call's span, kept open until its usage events are committed
        self.agent_spans: dict[str, _AgentSpan] = {}


class _AgentSpan:
    __slots__ = ("closed", "end_ns", "span", "usage")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.end_ns: int | None = None  # set when the call returned
        self.closed = False  # set when the attempt's outcome was committed first
        self.usage: dict[str, float] = {}

    def finish(self, end_ns: int | None = None) -> None:
        for name, value in self.usage.items():
            self.span.set_attribute(name, value)
        self.span.end(end_time=end_ns)


class Telemetry(Instrumentation):
    def __init__(self, *, tracer_provider: Any = None, metrics: Metrics | None = None) -> None:
        self.tracer = (
            tracer_provider.get_tracer(INSTRUMENTATION_NAME)
            if tracer_provider is not None
            else None
        )
        self.metrics = metrics
        self._runs: dict[str, _Execution] = {}
        self._complained = False
        if metrics is not None:
            self._started = metrics.executions_started
            self._running = metrics.executions_running
            self._commit = metrics.store_commit
            self._events = metrics.events
            self._node_running: dict[str, Any] = {}
            self._node_duration: dict[tuple[str, str], Any] = {}
            # Label children by value, so a hot path does one dict lookup.
            self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _failed(self, where: str) -> None:
        if not self._complained:
            self._complained = True
            log.exception("instrumentation hook %s failed (reported once)", where)

    # ------------------------------------------------------------------- executions
    def execution_started(self, record: ExecutionRecord) -> None:
        try:
            run = self._runs.get(record.id)
            if run is None:
                run = self._runs[record.id] = _Execution(record.workflow)
                # Once per execution and process, even if its run is rebuilt after a store
                # failure: started - finished stays the number running.
                if self.metrics is not None:
                    self._child(self._started, record.workflow).inc()
                    self._child(self._running, record.workflow).inc()
            if self.tracer is not None and run.span is None:
                labels = record.labels or {}
                parent = context_from_traceparent(labels.get("traceparent"))
                attributes: dict[str, Any] = {
                    "agentrun.execution.id": record.id,
                    "agentrun.workflow": record.workflow,
                    "agentrun.workflow.version": record.version,
                    "agentrun.tenant": record.tenant,
                }
                if record.parent_id:
                    attributes["agentrun.execution.parent"] = record.parent_id
                    attributes["agentrun.execution.parent_node"] = record.parent_node or ""
                if "rerun_of" in labels:
                    attributes["agentrun.execution.rerun_of"] = labels["rerun_of"]
                if record.last_sequence > 2:
                    attributes["agentrun.execution.resumed"] = True
                run.span = self.tracer.start_span(
                    f"execution {record.workflow}", context=parent, attributes=attributes
                )
                run.context = trace.set_span_in_context(run.span)
        except Exception:
            self._failed("execution_started")

    def execution_ended(self, record: ExecutionRecord) -> None:
        try:
            run = self._runs.pop(record.id, None)
            status = record.state.value
            if self.metrics is not None:
                m = self.metrics
                m.executions_finished.labels(record.workflow, status).inc()
                if run is not None:
                    self._running.labels(record.workflow).dec()
                    if record.started_at is not None and record.ended_at is not None:
                        seconds = record.ended_at - record.started_at
                    else:
                        seconds = time.perf_counter() - run.t0
                    m.execution_duration.labels(record.workflow, status).observe(max(0.0, seconds))
            if run is None:
                return
            for pending in run.agent_spans.values():
                pending.finish(pending.end_ns)
            span = run.span
            if span is not None and span.is_recording():
                span.set_attribute("agentrun.execution.state", status)
                error = record.error or {}
                if status != "SUCCEEDED":
                    if error.get("type"):
                        span.set_attribute("error.type", str(error["type"]))
                    if error.get("node"):
                        span.set_attribute("agentrun.error.node", str(error["node"]))
                    span.set_status(
                        Status(StatusCode.ERROR, str(error.get("message") or status)[:256])
                    )
                for name, value in (record.usage or {}).items():
                    span.set_attribute(f"agentrun.usage.{name}", value)
            if span is not None:
                span.end()
        except Exception:
            self._failed("execution_ended")

    # ------------------------------------------------------------------- attempts
    def attempt(
        self,
        record: ExecutionRecord | InstanceRecord,
        node_id: str,
        kind: str,
        attempt: int,
        target: str,
    ) -> Any:
        return _Attempt(self, record, node_id, kind, attempt, target)

    # ------------------------------------------------------------------- commits
    def events_committed(
        self, record: ExecutionRecord, events: list[EventRecord], seconds: float
    ) -> None:
        try:
            metrics = self.metrics
            if metrics is not None:
                self._commit.observe(seconds)
                self._events.inc(len(events))
            run = self._runs.get(record.id)
            for event in events:
                type_ = event.type
                if type_[0] == "e":  # execution.<state>: the hooks cover those
                    continue
                if type_ == "node.running":
                    data = event.data
                    if data is None or len(data) == 1:  # {attempt} only: no scheduler wait
                        continue
                    queued = data.get("queued_seconds")
                    limited = bool(data.get("rate_limited"))
                    if metrics is not None:
                        if queued is not None:
                            metrics.queue_wait.observe(queued)
                        if limited:
                            metrics.rate_limit_waits.inc()
                    if (
                        run is not None
                        and self.tracer is not None
                        and (queued is not None or limited)
                    ):
                        run.queued[event.node_id or ""] = (float(queued or 0.0), limited)
                    continue
                if type_ == "agent.usage":
                    self._usage(record, run, event)
                    continue
                if run is not None and run.agent_spans and type_ in _ENDS_ATTEMPT:
                    pending = run.agent_spans.get(event.node_id or "")
                    if pending is not None:
                        if pending.end_ns is not None:
                            del run.agent_spans[event.node_id or ""]
                            pending.finish(pending.end_ns)
                        else:
                            pending.closed = True
                if metrics is None:
                    continue
                if type_ == "node.retrying":
                    self._child(metrics.node_retries, record.workflow).inc()
                elif type_ in _TERMINAL_NODE:
                    key = event.node_id or ""
                    if "[" not in key and not key.endswith((".compensate", ".fallback")):
                        self._child(metrics.nodes_finished, type_[5:]).inc()
                elif type_ == "node.compensated":
                    metrics.compensations.labels(record.workflow, "compensated").inc()
                elif type_ == "node.compensation_failed":
                    metrics.compensations.labels(record.workflow, "failed").inc()
                elif type_.startswith("breaker."):
                    data = event.data or {}
                    name, state = str(data.get("name") or ""), str(data.get("state") or type_[8:])
                    metrics.breaker_state.labels(name).set(BREAKER_STATES.get(state, -1))
                    metrics.breaker_transitions.labels(name, state).inc()
        except Exception:
            self._failed("events_committed")

    def _usage(self, record: ExecutionRecord, run: _Execution | None, event: EventRecord) -> None:
        data = event.data or {}
        key = event.node_id or ""
        provider, model = data.get("provider"), data.get("model")
        if (not provider or not model) and run is not None:
            # The node's `provider/model`; a model the provider reports wins (the API's name).
            target_provider, _, target_model = run.targets.get(key, "").partition("/")
            provider, model = provider or target_provider, model or target_model
        provider, model = str(provider or "unknown"), str(model or "unknown")
        pending = run.agent_spans.get(key) if run is not None else None
        for name, value in data.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            kind = _USAGE_KEYS.get(name)
            if self.metrics is not None:
                if kind is not None:
                    self.metrics.llm_tokens.labels(provider, model, kind).inc(value)
                elif name == "cost":
                    self.metrics.llm_cost.labels(provider, model).inc(value)
            if pending is not None:
                attr = (
                    "gen_ai.usage.input_tokens"
                    if kind == "prompt"
                    else "gen_ai.usage.output_tokens"
                    if kind == "completion"
                    else f"agentrun.usage.{name}"
                )
                pending.usage[attr] = pending.usage.get(attr, 0) + value

    # ------------------------------------------------------------------- instances
    def instance_committed(self, record: InstanceRecord, entries: list[HistoryRecord]) -> None:
        try:
            m = self.metrics
            if m is None:
                return
            workflow = record.workflow
            for entry in entries:
                kind = entry.kind
                self._child(m.instance_entries, workflow, kind.value).inc()
                if kind is EntryKind.CREATED:
                    self._child(m.instances_started, workflow).inc()
            if record.state.terminal:
                status = record.state.value
                self._child(m.instances_finished, workflow, status).inc()
                ended = record.ended_at if record.ended_at is not None else record.updated_at
                self._child(m.instance_duration, workflow, status).observe(
                    max(0.0, ended - record.created_at)
                )
        except Exception:
            self._failed("instance_committed")

    def events_published(self, execution_id: str, events: list[EventRecord]) -> None:
        """For event-bus adapters (NATS, Kafka): `events` reached the bus now; observes the
        lag from each batch's last commit (`event.time`) to its publication."""
        try:
            if self.metrics is not None and events:
                self.metrics.observe_bus_lag(time.time() - events[-1].time)
        except Exception:
            self._failed("events_published")

    # ------------------------------------------------------------------- shutdown
    def close(self) -> None:
        """Ends the spans of executions still running here (a shutdown detaches them)."""
        for run in self._runs.values():
            for pending in run.agent_spans.values():
                pending.finish(pending.end_ns)
            if run.span is not None:
                run.span.set_attribute("agentrun.execution.detached", True)
                run.span.end()
        self._runs.clear()


def _outcome(exc: BaseException | None) -> tuple[str, str]:
    """(metric outcome, error type) of a call that raised `exc`."""
    if exc is None:
        return "success", ""
    if isinstance(exc, TimeoutError):
        return "timeout", "timeout"
    if isinstance(exc, BaseException) and type(exc).__name__ == "CancelledError":
        return "cancelled", "cancelled"
    error_type = getattr(exc, "type", None)
    if isinstance(error_type, str) and error_type:
        return "error", error_type
    return "error", type(exc).__name__


class _Attempt:
    """The context manager around one call, entered inside the call's own task."""

    __slots__ = (
        "_attempt",
        "_key",
        "_kind",
        "_record",
        "_span",
        "_t",
        "_t0",
        "_target",
        "_token",
        "_tp_token",
    )

    def __init__(
        self,
        t: Telemetry,
        record: ExecutionRecord | InstanceRecord,
        key: str,
        kind: str,
        attempt: int,
        target: str,
    ) -> None:
        self._t = t
        self._record = record
        self._key = key
        self._kind = kind
        self._attempt = attempt
        self._target = target
        self._span: Any = None
        self._token: Any = None
        self._tp_token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> Any:
        t = self._t
        record, key, kind = self._record, self._key, self._kind
        self._t0 = time.perf_counter()
        try:
            log_context.set((record.tenant, record.workflow, record.id, key, self._attempt))
            run = t._runs.get(record.id)
            if run is not None and kind == "agent":
                run.targets[key] = self._target
            if t.metrics is not None:
                gauge = t._node_running.get(kind)
                if gauge is None:
                    gauge = t._node_running[kind] = t.metrics.nodes_running.labels(kind)
                gauge.inc()
            if (
                t.tracer is not None
                and run is not None
                and run.span is not None
                and not run.span.is_recording()
            ):
                # The execution is not sampled, so no attempt of it is: skip making spans,
                # but keep its context current (a tool still propagates the trace id).
                self._token = otel_context.attach(run.context)
                if run.span.get_span_context().is_valid:
                    self._tp_token = current_traceparent.set(
                        format_traceparent(run.span.get_span_context())
                    )
            elif t.tracer is not None:
                parent = run.context if run is not None else None
                # Execution id and version are on the parent span.
                attributes: dict[str, Any] = {
                    "agentrun.workflow": record.workflow,
                    "agentrun.node.id": key,
                    "agentrun.node.kind": kind,
                    "agentrun.node.attempt": self._attempt,
                }
                if kind == "agent":
                    provider, _, model = self._target.partition("/")
                    attributes["gen_ai.system"] = provider
                    attributes["gen_ai.request.model"] = model
                elif kind == "tool":
                    attributes["agentrun.tool.name"] = self._target
                else:
                    attributes["agentrun.workflow.child"] = self._target
                if run is not None and run.queued:
                    waited = run.queued.pop(key, None)
                    if waited is not None:
                        attributes["agentrun.queue.wait_seconds"] = waited[0]
                        if waited[1]:
                            attributes["agentrun.queue.rate_limited"] = True
                span = t.tracer.start_span(
                    f"{kind} {self._target}",
                    context=parent,
                    kind=_SPAN_KIND.get(kind, SpanKind.INTERNAL),
                    attributes=attributes,
                )
                self._span = span
                if kind == "agent" and run is not None and span.is_recording():
                    run.agent_spans[key] = _AgentSpan(span)
                self._token = otel_context.attach(trace.set_span_in_context(span))
                ctx = span.get_span_context()
                if ctx.is_valid:
                    # The traceparent of the running attempt, for HTTP tools to send.
                    self._tp_token = current_traceparent.set(format_traceparent(ctx))
        except Exception:
            t._failed("attempt enter")
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        t = self._t
        try:
            outcome, error_type = _outcome(exc)
            if t.metrics is not None:
                seconds = time.perf_counter() - self._t0
                key = (self._kind, outcome)
                hist = t._node_duration.get(key)
                if hist is None:
                    hist = t._node_duration[key] = t.metrics.node_duration.labels(*key)
                hist.observe(seconds)
                t._node_running[self._kind].dec()
            if self._tp_token is not None:
                current_traceparent.reset(self._tp_token)
            if self._token is not None:
                otel_context.detach(self._token)
            span = self._span
            if span is None or getattr(span, "end_time", None) is not None:
                return  # not tracing, or ended with its execution (cancelled mid-call)
            if error_type:
                span.set_attribute("error.type", error_type)
                if outcome != "cancelled":
                    message = getattr(exc, "message", None) or str(exc)
                    span.set_status(Status(StatusCode.ERROR, message[:256]))
            if self._kind == "agent":
                # Kept open until the attempt's outcome is committed, with its usage events.
                run = t._runs.get(self._record.id)
                pending = run.agent_spans.get(self._key) if run is not None else None
                if run is not None and pending is not None and pending.span is span:
                    if pending.closed:
                        del run.agent_spans[self._key]
                        pending.finish()
                    else:
                        pending.end_ns = time.time_ns()
                    return
            span.end()
        except Exception:
            t._failed("attempt exit")
