"""`MemoryMachineStore`: state machine instances kept in the process (tests, benchmarks and the
memory engine), with the same contract as the SQL store (tests/machines/test_store.py)."""

from __future__ import annotations

from collections.abc import Sequence

from agentrun.storage.machine_base import (
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
    copy_history,
    copy_instance,
    copy_timer,
)


class MemoryMachineStore(MachineStore):
    """Everything in the process; for tests, benchmarks and the memory engine."""

    def __init__(self) -> None:
        self._instances: dict[str, InstanceRecord] = {}
        self._requests: dict[tuple[str, str], str] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self._event_ids: dict[str, dict[str, int]] = {}
        self._timers: dict[str, dict[str, TimerRecord]] = {}

    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        if record.request_id is not None:
            known = self._requests.get((record.tenant, record.request_id))
            if known is not None:
                return copy_instance(self._instances[known]), False
        if record.id in self._instances:
            raise ValueError(f"instance {record.id} exists")
        self._instances[record.id] = copy_instance(record)
        if record.request_id is not None:
            self._requests[(record.tenant, record.request_id)] = record.id
        self._history[record.id] = []
        self._event_ids[record.id] = {}
        self._timers[record.id] = {}
        self._append(record.id, history)
        for timer in timers:
            self._timers[record.id][timer.key] = copy_timer(timer)
        return copy_instance(record), True

    def _append(self, instance_id: str, history: Sequence[HistoryRecord]) -> None:
        entries = self._history[instance_id]
        ids = self._event_ids[instance_id]
        for entry in history:
            if entries and entry.sequence <= entries[-1].sequence:
                raise ValueError(f"history entry {instance_id}/{entry.sequence} exists")
            if entry.event_id is not None:
                if entry.event_id in ids:
                    raise ValueError(f"event id {entry.event_id!r} was applied already")
                ids[entry.event_id] = entry.sequence
            entries.append(entry)

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        record = self._instances.get(instance_id)
        return copy_instance(record) if record is not None else None

    async def list_instances(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[InstanceState] = (),
        current: str | None = None,
    ) -> list[InstanceRecord]:
        out = []
        for record in sorted(self._instances.values(), key=lambda r: r.id):
            if record.tenant != tenant or (after_id is not None and record.id <= after_id):
                continue
            if workflow is not None and record.workflow != workflow:
                continue
            if states and record.state not in states:
                continue
            if current is not None and record.current != current:
                continue
            out.append(copy_instance(record))
            if len(out) >= limit:
                break
        return out

    async def list_history(
        self, instance_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[HistoryRecord]:
        entries = self._history.get(instance_id, [])
        # Sequences start at 1 and have no gaps: the position is the sequence.
        return [copy_history(e) for e in entries[after_sequence : after_sequence + limit]]

    async def event_ids(self, instance_id: str) -> dict[str, int]:
        return dict(self._event_ids.get(instance_id, {}))

    async def list_timers(
        self,
        *,
        instance_id: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[TimerRecord]:
        groups = (
            [self._timers.get(instance_id, {})]
            if instance_id is not None
            else self._timers.values()
        )
        timers = sorted(
            (
                copy_timer(t)
                for by_key in groups
                for t in by_key.values()
                if due_before is None or t.fire_at <= due_before
            ),
            key=lambda t: t.fire_at,
        )
        return timers[:limit] if limit is not None else timers

    async def list_invoking(self) -> list[InstanceRecord]:
        return [
            copy_instance(r)
            for r in sorted(self._instances.values(), key=lambda r: r.id)
            if r.state is InstanceState.ACTIVE and r.invoke_execution
        ]

    async def commit(self, batch: MachineBatch) -> None:
        self.commit_now(batch)

    def commit_now(self, batch: MachineBatch) -> None:
        """`commit` without a coroutine: nothing here waits."""
        instance = batch.instance
        stored = self._instances.get(instance.id)
        if stored is None:
            raise KeyError(f"unknown instance {instance.id}")
        if batch.base is not None and stored.last_sequence != batch.base:
            raise ValueError(f"instance {instance.id} moved on: {stored.last_sequence}")
        history = batch.history
        if len(history) == 1 and history[0].event_id is None:  # the common case, inline
            entries = self._history[instance.id]
            entry = history[0]
            if entries and entry.sequence <= entries[-1].sequence:
                raise ValueError(f"history entry {instance.id}/{entry.sequence} exists")
            entries.append(entry)
        else:
            self._append(instance.id, history)
        # The engine hands over a snapshot it never changes again: no copy needed.
        self._instances[instance.id] = instance
        if batch.timers is not None:
            self._timers[instance.id] = {t.key: t for t in batch.timers}
        elif batch.fired is not None:
            self._timers[instance.id].pop(batch.fired, None)
        for timer in batch.added:
            self._timers[instance.id][timer.key] = copy_timer(timer)
