"""`MemoryMachineStore`: state machine instances kept in the process (tests, benchmarks and the
memory engine), with the same contract as the SQL store (tests/machines/test_store.py)."""

from __future__ import annotations

from collections.abc import Sequence

from agentrun.storage.base import LeaseLost
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
        # Leases beside the records (the engine's snapshots are stored as they come, and
        # carry no lease): instance id -> (owner, epoch), the fence a commit must carry; and
        # instance id -> when the lease expires.
        self._leases: dict[str, tuple[str | None, int]] = {}
        self._expires: dict[str, float | None] = {}

    def _out(self, record: InstanceRecord) -> InstanceRecord:
        """A copy of `record` with its lease."""
        out: InstanceRecord = copy_instance(record)
        lease = self._leases.get(record.id)
        if lease is not None:
            out.owner, out.lease_epoch = lease
            out.lease_expires_at = self._expires[record.id]
        return out

    def _lease(
        self, instance_id: str, owner: str | None, epoch: int, expires: float | None
    ) -> None:
        self._leases[instance_id] = (owner, epoch)
        self._expires[instance_id] = expires

    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        if record.request_id is not None:
            known = self._requests.get((record.tenant, record.request_id))
            if known is not None:
                return self._out(self._instances[known]), False
        if record.id in self._instances:
            raise ValueError(f"instance {record.id} exists")
        self._instances[record.id] = copy_instance(record)
        self._lease(record.id, record.owner, record.lease_epoch, record.lease_expires_at)
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
        return self._out(record) if record is not None else None

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
            out.append(self._out(record))
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
            self._out(r)
            for r in sorted(self._instances.values(), key=lambda r: r.id)
            if r.state is InstanceState.ACTIVE and r.invoke_execution
        ]

    async def commit(self, batch: MachineBatch) -> None:
        self._write(batch)

    async def acquire(
        self,
        instance_id: str,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        take: bool,
        tenant: str | None = None,
    ) -> InstanceRecord | None:
        record = self._instances.get(instance_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        held_by, epoch = self._leases.get(instance_id, (None, 0))
        if held_by != owner:
            if held_by is not None and (self._expires[instance_id] or 0.0) >= now and not take:
                return None
            epoch += 1
        self._lease(instance_id, owner, epoch, now + lease_seconds)
        return self._out(record)

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        mine = {
            i
            for i, (held_by, _) in self._leases.items()
            if held_by == owner and self._instances[i].state is InstanceState.ACTIVE
        }
        for i in mine:
            self._expires[i] = now + lease_seconds
        return mine

    async def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[InstanceRecord]:
        out: list[InstanceRecord] = []
        wanted = None if ids is None else set(ids)
        for record in sorted(self._instances.values(), key=lambda r: r.id):
            if len(out) >= limit:
                break
            if after_id is not None and record.id <= after_id:
                continue
            if wanted is not None and record.id not in wanted:
                continue
            held_by, epoch = self._leases.get(record.id, (None, 0))
            free = held_by is None or (self._expires.get(record.id) or 0.0) < now
            if record.state is not InstanceState.ACTIVE or not (
                (free and held_by != owner) or (include_own and held_by == owner)
            ):
                continue
            if self._driven(record):
                self._lease(record.id, owner, epoch + 1, now + lease_seconds)
                out.append(self._out(record))
        return out

    async def held_instances(self, owner: str) -> set[str]:
        return {
            i
            for i, (held_by, _) in self._leases.items()
            if held_by == owner
            and self._instances[i].state is InstanceState.ACTIVE
            and self._driven(self._instances[i])
        }

    def _driven(self, record: InstanceRecord) -> bool:
        """Something to drive: a pending event, an invoked execution, a timer."""
        return bool(record.pending or record.invoke_execution or self._timers.get(record.id))

    async def release_leases(self, owner: str) -> None:
        for i, (held_by, _) in self._leases.items():
            if held_by == owner:
                self._expires[i] = 0.0

    def _write(self, batch: MachineBatch) -> bool:
        """`commit` without a coroutine (nothing here waits): always written, True; what
        `commit` raises (LeaseLost, a stale base or sequence), this raises, and writes
        nothing. `write_at_once` and `commit` both."""
        instance = batch.instance
        stored = self._instances.get(instance.id)
        if stored is None:
            raise KeyError(f"unknown instance {instance.id}")
        fence = batch.fence
        if fence is not None and self._leases[instance.id] != fence:
            raise LeaseLost(f"instance {instance.id} is leased to another replica or epoch")
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
        # The engine hands over a snapshot it never changes again: no copy needed (its lease
        # fields are not the store's: `_leases` holds those).
        self._instances[instance.id] = instance
        if batch.timers is not None:
            self._timers[instance.id] = {t.key: t for t in batch.timers}
        elif batch.fired is not None:
            self._timers[instance.id].pop(batch.fired, None)
        for timer in batch.added:
            self._timers[instance.id][timer.key] = copy_timer(timer)
        return True

    # `MachineStore.write_at_once`: every batch is written at once here, the engine's events
    # without a coroutine. `commit` calls `_write` itself: a store whose `write_at_once` is
    # taken away (a test forcing the awaited way) still commits.
    write_at_once = _write
