"""The execution trace view: per node, its attempts, queue waits and usage, computed from the
stored event log and node records (no live state, so it works for any execution, on any
replica, after restarts).

Events read: `node.ready` (ready time), `node.running` (an attempt starts; `queued_seconds`,
`rate_limited`), `node.retrying` (the attempt failed; `error`, `delay`), `node.<final state>`
(the attempt's outcome), `agent.usage` (tokens and cost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentrun.server.observability.context import trace_id_of
from agentrun.storage.records import EventRecord, ExecutionRecord, NodeRecord

_OUTCOMES = frozenset(
    {"succeeded", "failed", "retrying", "cancelled", "skipped", "escalated", "compensating"}
)
_USAGE_KEYS = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}


@dataclass(slots=True)
class AttemptView:
    attempt: int
    start: float
    end: float | None = None
    # The node state the attempt led to (upper case), "" while it runs.
    outcome: str = ""
    error: dict[str, Any] | None = None
    queued_seconds: float = 0.0
    rate_limited: bool = False
    retry_delay: float | None = None


@dataclass(slots=True)
class NodeView:
    node_id: str
    state: str = "PENDING"
    ready: float | None = None
    end: float | None = None
    attempts: list[AttemptView] = field(default_factory=list)
    queued_seconds: float = 0.0
    usage: dict[str, float] = field(default_factory=dict)
    skip_reason: str = ""
    # Position of the first event about it, for ordering.
    first_seen: int = 0


@dataclass(slots=True)
class TraceView:
    execution: ExecutionRecord
    trace_id: str
    nodes: list[NodeView]
    usage: dict[str, float]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build_trace(
    execution: ExecutionRecord, nodes: Iterable[NodeRecord], events: Iterable[EventRecord]
) -> TraceView:
    views: dict[str, NodeView] = {}
    # When each node last became READY, until it starts running.
    ready_at: dict[str, float] = {}

    def view(key: str, seq: int) -> NodeView:
        v = views.get(key)
        if v is None:
            v = views[key] = NodeView(key, first_seen=seq)
        return v

    for event in events:
        key = event.node_id
        if not key:
            continue
        kind, _, what = event.type.partition(".")
        data = event.data or {}
        if kind == "agent" and what == "usage":
            usage = view(key, event.sequence).usage
            for name, value in data.items():
                n = _number(value)
                if n is not None:
                    name = _USAGE_KEYS.get(name, name)
                    usage[name] = usage.get(name, 0.0) + n
            continue
        if kind != "node":
            continue
        v = view(key, event.sequence)
        v.state = what.upper()
        ready = ready_at.pop(key, None)
        if what == "ready":
            ready_at[key] = event.time
            if v.ready is None:
                v.ready = event.time
        elif what == "running":
            queued = _number(data.get("queued_seconds"))
            if queued is None:
                # No scheduler ticket: the wait is the gap since the node became ready.
                queued = max(0.0, event.time - ready) if ready is not None else 0.0
            attempt = int(_number(data.get("attempt")) or len(v.attempts) + 1)
            v.attempts.append(
                AttemptView(
                    attempt,
                    event.time,
                    queued_seconds=queued,
                    rate_limited=bool(data.get("rate_limited")),
                )
            )
            v.queued_seconds += queued
        elif what in _OUTCOMES:
            current = v.attempts[-1] if v.attempts and v.attempts[-1].end is None else None
            if current is not None:
                current.end = event.time
                current.outcome = what.upper()
                if isinstance(data.get("error"), dict):
                    current.error = data["error"]
                delay = _number(data.get("delay"))
                if delay is not None:
                    current.retry_delay = delay
            if what == "skipped":
                v.skip_reason = str(data.get("skip_reason") or "")
            if what not in ("retrying", "escalated", "compensating"):
                v.end = event.time
        else:  # waiting, compensated, compensation_failed, ...
            if what in ("compensated", "compensation_failed"):
                v.end = event.time
    for rec in nodes:
        v = view(rec.node_id, 1 << 62)
        v.state = rec.state.value
        if rec.usage and not v.usage:
            v.usage = dict(rec.usage)
        if rec.skip_reason and not v.skip_reason:
            v.skip_reason = rec.skip_reason
        if v.end is None and rec.ended_at is not None:
            v.end = rec.ended_at
        if v.ready is None and rec.started_at is not None:
            v.ready = rec.started_at
    ordered = sorted(views.values(), key=_order_key(views))
    return TraceView(
        execution=execution,
        trace_id=trace_id_of((execution.labels or {}).get("traceparent")),
        nodes=ordered,
        usage=dict(execution.usage or {}),
    )


def _order_key(views: dict[str, NodeView]) -> Any:
    """Nodes by first appearance; items, compensations and fallbacks right after their node."""

    def base(key: str) -> str:
        return key.split("[", 1)[0].removesuffix(".compensate").removesuffix(".fallback")

    def key(v: NodeView) -> tuple[int, int, int]:
        owner = views.get(base(v.node_id))
        owner_seen = owner.first_seen if owner is not None else v.first_seen
        return (owner_seen, 0 if v.node_id == base(v.node_id) else 1, v.first_seen)

    return key
