"""The writes of one turn of a DAG run: the events, node rows and execution row that its next
commit holds (LangGraph's pending writes). Every state change of the run goes through here,
so that nothing reaches the store, or a watcher, that is not in a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)

_EXEC_EVENT = {s: f"execution.{s.value.lower()}" for s in ExecutionState}
_NODE_EVENT = {s: f"node.{s.value.lower()}" for s in NodeState}


class Journal:
    def __init__(self, record: ExecutionRecord, clock: Callable[[], float]) -> None:
        self.record = record
        self.clock = clock
        self.batch = Batch()
        # The batch's events (appended to on every change).
        self.events = self.batch.events
        self.dirty: dict[str, NodeRecord] = {}

    def event(
        self, type_: str, node_id: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        rec = self.record
        seq = rec.last_sequence = rec.last_sequence + 1
        self.events.append(EventRecord(rec.id, seq, type_, self.clock(), node_id, data))

    def execution_changed(self) -> None:
        self.batch.execution = self.record

    def execution_state(self, state: ExecutionState, data: dict[str, Any] | None = None) -> None:
        if self.record.state is state:
            return
        self.record.state = state
        self.batch.execution = self.record
        self.event(_EXEC_EVENT[state], None, data)

    def node_changed(self, rec: NodeRecord) -> None:
        self.dirty[rec.node_id] = rec

    def node_state(
        self,
        rec: NodeRecord,
        state: NodeState,
        data: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """`rec` moves to `state`; its event at `now` (the caller's clock reading, taken for
        the record's own times too), else at the clock's."""
        # `event`, written out: three of these per node.
        rec.state = state
        node_id = rec.node_id
        self.dirty[node_id] = rec
        execution = self.record
        seq = execution.last_sequence = execution.last_sequence + 1
        self.events.append(
            EventRecord(
                execution.id,
                seq,
                _NODE_EVENT[state],
                self.clock() if now is None else now,
                node_id,
                data,
            )
        )

    def add_usage(self, usage: dict[str, Any], *owners: NodeRecord | None) -> None:
        """Sums an `agent.usage` report's numbers (tokens, cost) on each owner and the execution."""
        numbers = {
            k: v
            for k, v in usage.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for rec in owners:
            if rec is not None:
                rec.usage = _summed(rec.usage, numbers)
                self.dirty[rec.node_id] = rec
        self.record.usage = _summed(self.record.usage, numbers)
        self.batch.execution = self.record

    def consume_signal(self, seq: int, by: str) -> None:
        self.batch.consumed_signals.append((self.record.id, seq, by))

    def consume(self, signal: SignalRecord, by: str) -> None:
        """`signal` is consumed by `by`: a stored one (its seq) marked, one not stored yet
        (offered, seq 0) stored by this batch, consumed."""
        if signal.seq:
            self.consume_signal(signal.seq, by)
        else:
            signal.consumed_by = by
            self.batch.signals.append(signal)

    def take(self) -> Batch | None:
        """The batch to commit (fenced with this replica's lease), or None if nothing changed;
        the journal starts empty again."""
        batch = self.batch
        if self.dirty:
            batch.nodes = list(self.dirty.values())
        if batch.execution is None and (batch.events or batch.nodes):
            batch.execution = self.record
        if not (
            batch.events
            or batch.nodes
            or batch.execution is not None
            or batch.consumed_signals
            or batch.signals
        ):
            return None
        if self.record.owner is not None:
            batch.fence = (self.record.owner, self.record.lease_epoch)
        self.batch = Batch()
        self.events = self.batch.events
        self.dirty = {}
        return batch


def _summed(total: dict[str, float] | None, more: dict[str, float]) -> dict[str, float]:
    out = dict(total or {})
    for k, v in more.items():
        out[k] = out.get(k, 0) + v
    return out
