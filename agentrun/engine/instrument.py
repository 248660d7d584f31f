"""Hooks through which observability (traces, metrics) watches the engine.

The engine calls these at a few points; the default does nothing and costs one attribute
check per call. `agentrun.server.observability` implements them with OpenTelemetry and
Prometheus. Hooks must not raise and must not block: they run on the engine's loop.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from agentrun.storage.machine_base import HistoryRecord, InstanceRecord
from agentrun.storage.records import EventRecord, ExecutionRecord

current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentrun_traceparent", default=None
)
"""The W3C `traceparent` of the node attempt running in this task (set by the instrumentation
when tracing); HTTP tools send it as the `traceparent` header."""


class Instrumentation:
    def execution_started(self, record: ExecutionRecord) -> None:
        """An execution began running in this process (fresh, resumed or rerun)."""

    def execution_ended(self, record: ExecutionRecord) -> None:
        """An execution reached a final state."""

    @contextlib.contextmanager
    def attempt(
        self,
        record: ExecutionRecord | InstanceRecord,
        node_id: str,
        kind: str,
        attempt: int,
        target: str,
    ) -> Iterator[Any]:
        """Wraps one call (tool, agent, workflow) inside its own task (a node's of an
        execution, or an action's of a state machine instance, `node_id` then
        `STATE.PHASE[INDEX]`), so that a span made
        current here is the parent of what the call does (HTTP requests, LLM calls).
        `target` is the tool name or provider/model; the hook may read the outcome from the
        exception that leaves the block."""
        yield None

    def events_committed(
        self, record: ExecutionRecord, events: list[EventRecord], seconds: float
    ) -> None:
        """A batch of events was committed (`seconds`: the store's commit time)."""

    def events_published(self, execution_id: str, events: list[EventRecord]) -> None:
        """An event bus delivered these events (for the bus-lag metric)."""

    def instance_committed(self, record: InstanceRecord, entries: list[HistoryRecord]) -> None:
        """A state machine instance's event was committed: `record` is the instance after
        it, `entries` the history entries it wrote (a creation, transitions, an end)."""


NO_INSTRUMENTATION = Instrumentation()
