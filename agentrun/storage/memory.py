"""An in-process store: nothing survives the process.

For tests, benchmarks and `agentrun run --memory`. It keeps the Store contract except
durability; records are copied in and out so callers cannot alias stored state. It mirrors
the SQL store's repositories: `MemoryWorkflows`, `MemoryExecutions`, a channel that tells
nobody (one process), and the state machine store (`MemoryMachineStore`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from agentrun.storage.base import ExecutionRepository, LeaseLost, Store, WorkflowRepository
from agentrun.storage.machines import MemoryMachineStore
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
    WorkflowRecord,
    copier,
)

# The records this store copies in and out; `_copy` gives back the type it was given.
R = TypeVar("R", WorkflowRecord, ExecutionRecord, NodeRecord, EventRecord, SignalRecord)


_COPIERS: dict[type, Callable[[Any], Any]] = {
    cls: copier(cls)
    for cls in (WorkflowRecord, ExecutionRecord, NodeRecord, EventRecord, SignalRecord)
}


_copy_node: Callable[[NodeRecord], NodeRecord] = _COPIERS[NodeRecord]
_copy_execution: Callable[[ExecutionRecord], ExecutionRecord] = _COPIERS[ExecutionRecord]


def _copy(record: R) -> R:
    # Shallow: records are copied so callers cannot change stored fields; payloads (JSON
    # values) are shared, as the engine never mutates a payload it has handed over.
    copied: R = _COPIERS[type(record)](record)
    return copied


class MemoryWorkflows(WorkflowRepository):
    def __init__(self) -> None:
        self._workflows: dict[tuple[str, str], list[WorkflowRecord]] = {}
        self._deleted: set[tuple[str, str, int]] = set()

    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        versions = self._workflows.setdefault((record.tenant, record.name), [])
        stored = replace(_copy(record), version=(versions[-1].version + 1) if versions else 1)
        versions.append(stored)
        return _copy(stored)

    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        versions = [
            r
            for r in self._workflows.get((tenant, name), ())
            if include_deleted or (tenant, name, r.version) not in self._deleted
        ]
        if not versions:
            return None
        if version is None:
            return _copy(versions[-1])
        for record in versions:
            if record.version == version:
                return _copy(record)
        return None

    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        names = sorted(
            n
            for (t, n), v in self._workflows.items()
            if t == tenant and v and (t, n, v[-1].version) not in self._deleted
        )
        if after_name is not None:
            names = [n for n in names if n > after_name]
        return [_copy(self._workflows[(tenant, n)][-1]) for n in names[:limit]]

    async def delete_workflow(self, tenant: str, name: str) -> bool:
        live = [
            r.version
            for r in self._workflows.get((tenant, name), ())
            if (tenant, name, r.version) not in self._deleted
        ]
        self._deleted.update((tenant, name, v) for v in live)
        return bool(live)


class MemoryExecutions(ExecutionRepository):
    def __init__(self) -> None:
        self._executions: dict[str, ExecutionRecord] = {}
        self._requests: dict[tuple[str, str], str] = {}
        self._nodes: dict[str, dict[str, NodeRecord]] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._signals: dict[str, list[SignalRecord]] = {}

    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        if record.request_id is not None:
            existing = self._requests.get((record.tenant, record.request_id))
            if existing is not None:
                return _copy(self._executions[existing]), False
            self._requests[(record.tenant, record.request_id)] = record.id
        self._executions[record.id] = _copy(record)
        self._nodes[record.id] = {n.node_id: _copy(n) for n in nodes}
        self._events[record.id] = list(events)  # kept uncopied, as `commit` keeps them
        return _copy(record), True

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        record = self._executions.get(execution_id)
        return _copy(record) if record is not None else None

    async def list_executions(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        newest_first: bool = False,
    ) -> list[ExecutionRecord]:
        wanted = set(states)
        out = []
        for key in sorted(self._executions, reverse=newest_first):
            record = self._executions[key]
            if record.tenant != tenant:
                continue
            if after_id is not None and (key >= after_id if newest_first else key <= after_id):
                continue
            if created_after is not None and record.created_at < created_after:
                continue
            if created_before is not None and record.created_at >= created_before:
                continue
            if workflow is not None and record.workflow != workflow:
                continue
            if wanted and record.state not in wanted:
                continue
            out.append(_copy(record))
            if len(out) >= limit:
                break
        return out

    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        return [_copy(r) for r in self._executions.values() if not r.state.terminal]

    async def get_nodes(self, execution_id: str) -> list[NodeRecord]:
        return [_copy(n) for n in self._nodes.get(execution_id, {}).values()]

    async def list_waits(
        self,
        tenant: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[NodeRecord]:
        out: list[NodeRecord] = []
        for eid in sorted(self._executions) if execution_id is None else [execution_id]:
            record = self._executions.get(eid)
            if record is None or record.tenant != tenant or record.state.terminal:
                continue
            if after is not None and eid < after[0]:
                continue
            for nid in sorted(self._nodes.get(eid, {})):
                node = self._nodes[eid][nid]
                if (
                    node.state is not NodeState.WAITING
                    or node.wait is None
                    or (after is not None and (eid, nid) <= after)
                ):
                    continue
                out.append(_copy(node))
                if len(out) >= limit:
                    return out
        return out

    async def commit(self, batch: Batch) -> None:
        self.commit_now(batch)

    def commit_now(self, batch: Batch) -> None:
        """`commit`, which never waits here. An engine turn's batch (every record of its own
        execution) takes `_commit_own`, the others the general way; both validate first, so
        a failing batch changes nothing (atomicity)."""
        execution = batch.execution
        if execution is not None:
            stored = self._executions.get(execution.id)
            if stored is None:
                raise KeyError(f"unknown execution {execution.id}")
            if self._commit_own(batch, execution, stored):
                return
        self._commit_any(batch)

    def _commit_own(
        self, batch: Batch, execution: ExecutionRecord, stored: ExecutionRecord
    ) -> bool:
        """Commits `batch` if all it holds is `execution`'s; False (nothing done) otherwise."""
        eid = execution.id
        if batch.signals:  # rare: `_commit_any` stores them
            return False
        for node in batch.nodes:
            if node.execution_id != eid:
                return False
        log = self._events.setdefault(eid, [])
        previous = log[-1].sequence if log else 0
        for event in batch.events:
            if event.execution_id != eid:
                return False
        fence = batch.fence
        if fence is not None and (stored.owner != fence[0] or stored.lease_epoch != fence[1]):
            raise LeaseLost(
                f"execution {eid} is leased to {stored.owner} epoch {stored.lease_epoch}"
            )
        for event in batch.events:
            if event.sequence <= previous:
                raise ValueError(f"event sequence {event.sequence} of {eid} already exists")
            previous = event.sequence
        record = _copy_execution(execution)
        # A commit changes the run state only, never the lease.
        record.owner = stored.owner
        record.lease_epoch = stored.lease_epoch
        record.lease_expires_at = stored.lease_expires_at
        self._executions[eid] = record
        if batch.nodes:
            nodes = self._nodes.setdefault(eid, {})
            for node in batch.nodes:
                nodes[node.node_id] = _copy_node(node)
        # Events are kept as committed, uncopied: nothing changes an event once it is made
        # (the engine makes a new one for each change), and reads hand out copies.
        log.extend(batch.events)
        if batch.consumed_signals:
            self._consume(batch)
        return True

    def _commit_any(self, batch: Batch) -> None:
        executions = self._executions
        execution = batch.execution
        touched = {execution.id} if execution is not None else set()
        touched.update(e.execution_id for e in batch.events)
        touched.update(n.execution_id for n in batch.nodes)
        touched.update(s.execution_id for s in batch.signals)
        if batch.fence is not None:
            for execution_id in touched:
                stored = executions.get(execution_id)
                if stored is not None and (stored.owner, stored.lease_epoch) != batch.fence:
                    raise LeaseLost(
                        f"execution {execution_id} is leased to {stored.owner} epoch {stored.lease_epoch}"
                    )
        for execution_id in touched:
            if execution_id not in executions:
                raise KeyError(f"unknown execution {execution_id}")
        last: dict[str, int] = {}
        for event in batch.events:
            log = self._events.get(event.execution_id)
            previous = last.get(event.execution_id, log[-1].sequence if log else 0)
            if event.sequence <= previous:
                raise ValueError(
                    f"event sequence {event.sequence} of {event.execution_id} already exists"
                )
            last[event.execution_id] = event.sequence
        new_signals: set[tuple[str, str]] = set()
        for signal in batch.signals:
            key = (signal.execution_id, signal.signal_id)
            if key in new_signals or any(
                s.signal_id == signal.signal_id for s in self._signals.get(key[0], ())
            ):
                raise ValueError(f"signal id {key[1]} of execution {key[0]} is used")
            new_signals.add(key)
        if execution is not None:
            stored = executions[execution.id]
            record = _copy(execution)
            record.owner, record.lease_epoch, record.lease_expires_at = (
                stored.owner,
                stored.lease_epoch,
                stored.lease_expires_at,
            )
            executions[execution.id] = record
        for node in batch.nodes:
            self._nodes.setdefault(node.execution_id, {})[node.node_id] = _copy_node(node)
        for event in batch.events:
            self._events.setdefault(event.execution_id, []).append(event)
        self._consume(batch)

    def _consume(self, batch: Batch) -> None:
        for signal in batch.signals:
            stored_signals = self._signals.setdefault(signal.execution_id, [])
            stored_signals.append(replace(_copy(signal), seq=len(stored_signals) + 1))
        for execution_id, seq, node_id in batch.consumed_signals:
            for signal in self._signals.get(execution_id, ()):
                if signal.seq == seq:
                    signal.consumed_by = node_id

    async def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int = 100,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[ExecutionRecord]:
        claimed = []
        wanted = None if ids is None else set(ids)
        for key in sorted(self._executions):
            record = self._executions[key]
            if record.state.terminal or (after_id is not None and key <= after_id):
                continue
            if wanted is not None and key not in wanted:
                continue
            # Never this replica's own by expiry: it runs those (see SqlStore.claim_executions).
            free = record.owner is None or (
                record.owner != owner and (record.lease_expires_at or 0) < now
            )
            if not free and not (include_own and record.owner == owner):
                continue
            record.owner = owner
            record.lease_epoch += 1
            record.lease_expires_at = now + lease_seconds
            claimed.append(_copy(record))
            if len(claimed) >= limit:
                break
        return claimed

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        owned = set()
        for record in self._executions.values():
            if record.owner == owner and not record.state.terminal:
                record.lease_expires_at = now + lease_seconds
                owned.add(record.id)
        return owned

    async def next_lease_expiry(self, owner: str) -> float | None:
        times = [
            (r.lease_expires_at or 0.0) if r.owner is not None else 0.0
            for r in self._executions.values()
            if not r.state.terminal and r.owner != owner
        ]
        return min(times, default=None)

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        wanted = None if execution_ids is None else set(execution_ids)
        for record in self._executions.values():
            if record.owner == owner and (wanted is None or record.id in wanted):
                record.lease_expires_at = 0.0

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        if retention_seconds is None:
            return 0
        dropped = 0
        for execution_id, record in self._executions.items():
            ended = record.ended_at
            if record.state.terminal and ended is not None and ended < now - retention_seconds:
                if self._events.get(execution_id):
                    self._events[execution_id] = []
                    dropped += 1
        return dropped

    async def list_events(
        self, execution_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        log = self._events.get(execution_id, [])
        start = bisect.bisect_right(log, after_sequence, key=lambda e: e.sequence)
        return [_copy(e) for e in log[start : start + limit]]

    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        if signal.execution_id not in self._executions:
            raise KeyError(f"unknown execution {signal.execution_id}")
        signals = self._signals.setdefault(signal.execution_id, [])
        for existing in signals:
            if existing.signal_id == signal.signal_id:
                return _copy(existing), False
        stored = replace(_copy(signal), seq=len(signals) + 1)
        signals.append(stored)
        return _copy(stored), True

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        for existing in self._signals.get(execution_id, []):
            if existing.signal_id == signal_id:
                return _copy(existing)
        return None

    async def pending_signals(self, execution_id: str) -> list[SignalRecord]:
        return [_copy(s) for s in self._signals.get(execution_id, []) if s.consumed_by is None]

    def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        """`Store.restore_read`, synchronous: the three reads as one."""
        record = self._executions.get(execution_id)
        if record is None:
            return None
        return (
            _copy(record),
            [_copy(n) for n in self._nodes.get(execution_id, {}).values()],
            [_copy(s) for s in self._signals.get(execution_id, []) if s.consumed_by is None],
        )


class MemoryNotifications:
    """One process: nobody else to tell, nobody else to hear."""

    async def notify(self, kind: str, keys: str) -> None:
        return None

    def listen(self, callback: Callable[[str, str], None]) -> None:
        return None

    def watch(self, keys: Callable[[], Collection[str]]) -> None:
        return None


class MemoryStore(Store):
    def __init__(self) -> None:
        self.workflows = MemoryWorkflows()
        self.executions = self._executions = MemoryExecutions()
        self.notifications = MemoryNotifications()
        self._machines: MemoryMachineStore | None = None

    async def commit(self, batch: Batch) -> None:
        # Straight to the repository: one coroutine less on every engine turn.
        self._executions.commit_now(batch)

    def commit_at_once(self, batch: Batch) -> bool:
        """`commit` without a coroutine (nothing here waits): a DAG run's turns commit so."""
        self._executions.commit_now(batch)
        return True

    @property
    def instances(self) -> MemoryMachineStore:
        if self._machines is None:
            self._machines = MemoryMachineStore()
        return self._machines

    async def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        """One step (no await between the three reads: nothing changes in between)."""
        return self._executions.restore_read(execution_id)
