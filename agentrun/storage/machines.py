"""Durable state of state machine instances: the instance rows, their history and their timers.

`MachineStore` is the small interface the state machine runtime needs; `MemoryMachineStore`
keeps everything in the process, `SqlMachineStore` works on the SQL core of a `SqlStore`
(`SqlStore.database`: same database, same migrations, same writer thread on SQLite) through
the shared group commit: the batches of many instances committed at once share one
transaction and one fsync.

One batch is everything one event changed: the instance's new state and data, the history
entries that record it, and its timers. It is atomic: after a crash the store holds the event's
effect entirely or not at all. An event whose action waits for its next attempt is stored half
way, as the instance's `pending` event with a retry timer (a batch with no history): after a
crash the timer fires and the event is handled on from there.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.sqldb import SqlDatabase

__all__ = [
    "EntryKind",
    "HistoryRecord",
    "InstanceRecord",
    "InstanceState",
    "MachineBatch",
    "MachineStore",
    "MemoryMachineStore",
    "SqlMachineStore",
    "TimerRecord",
]


class InstanceState(enum.StrEnum):
    """The lifecycle of an instance (FORMAT.md, States)."""

    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not InstanceState.ACTIVE


class EntryKind(enum.StrEnum):
    """What a history entry records."""

    # The instance was created and entered its initial state.
    CREATED = "CREATED"
    # An event moved the instance (to another state, or to the same one).
    TRANSITION = "TRANSITION"
    # The state handles the event but none of its guards held: nothing changed.
    NO_TRANSITION = "NO_TRANSITION"
    # The state does not handle the event: refused, nothing changed.
    REJECTED = "REJECTED"
    # An action, guard or assign failed before the state changed: nothing changed but the
    # actions that ran; an `on_error` entry or the instance's failure follows.
    ABORTED = "ABORTED"
    # The instance was cancelled.
    CANCELLED = "CANCELLED"


@dataclass(slots=True)
class InstanceRecord:
    id: str
    tenant: str
    workflow: str
    version: int
    state: InstanceState
    # The name of the machine state the instance is in.
    current: str
    data: dict[str, Any]
    input: Any
    created_at: float
    updated_at: float = 0.0
    ended_at: float | None = None
    # {"type", "message", "state", "details"} when the instance FAILED.
    error: dict[str, Any] | None = None
    request_id: str | None = None
    request_hash: str | None = None
    # The execution (and its node) that started the instance, for a DAG `workflow` node.
    parent_id: str | None = None
    parent_node: str | None = None
    # The sequence of the last history entry.
    last_sequence: int = 0
    # The sequence of the entry that entered `current` (timers and invokes carry it, so a
    # stale one is recognised after the state was left and entered again).
    entry_sequence: int = 0
    # The child execution the current state's `invoke` runs.
    invoke_execution: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # An event being handled whose action waits for its next attempt: {"event", "done" (the
    # results of the actions called so far), "attempt", "started", "error", "key" (its retry
    # timer), "at"}. The instance takes no other event until it is done.
    pending: dict[str, Any] | None = None


@dataclass(slots=True)
class HistoryRecord:
    instance_id: str
    sequence: int
    kind: EntryKind
    time: float
    # The event's name (`after:30m`, `invoke:done`, `invoke:error`, `action:error` for the
    # engine's own), its id (None when the sender gave none) and its data.
    event: str
    event_id: str | None
    event_data: Any
    from_state: str
    # Where the instance is after the entry (from_state when nothing moved).
    to_state: str
    # Index of the transition taken among the event's guarded ones; None when none was.
    transition_index: int | None = None
    # The actions run, in order: {phase, state, index, kind, target, ok, attempts, output|error}.
    actions: list[dict[str, Any]] | None = None
    # The values `assign` set.
    assigned: dict[str, Any] | None = None
    # The instance's lifecycle state after the entry.
    instance_state: InstanceState = InstanceState.ACTIVE
    error: dict[str, Any] | None = None
    # Whether the transition exited and re-entered its state.
    reentered: bool = False


@dataclass(slots=True)
class TimerRecord:
    instance_id: str
    # `ENTRY_SEQUENCE:INDEX`: which entry into the state armed it, and which `after` it is.
    key: str
    state: str
    index: int
    fire_at: float


@dataclass(slots=True)
class MachineBatch:
    """Everything one event changed, committed atomically."""

    instance: InstanceRecord
    history: list[HistoryRecord]
    # Not None: the instance's timers are replaced by these (its state was left or entered).
    timers: list[TimerRecord] | None = None
    # A timer that fired while the instance stayed in its state (or a retry timer spent).
    fired: str | None = None
    # Timers added to the instance's (after `timers` and `fired` applied): a retry timer.
    added: Sequence[TimerRecord] = ()
    # Not None: the instance's `last_sequence` the batch was computed from; the commit is
    # refused when the stored one differs (a batch with no history has no key to collide on).
    base: int | None = None


def _copier(cls: type) -> Any:
    getter = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
    return lambda record: cls(*getter(record))


copy_instance = _copier(InstanceRecord)
_copy_history = _copier(HistoryRecord)
_copy_timer = _copier(TimerRecord)


class MachineStore(abc.ABC):
    """Durable state of state machine instances.

    Contract (tests/machines/test_store.py runs it against every backend):
    - `commit` is atomic and, once it returns, survives a process kill (SQL backends).
    - history is append-only; (instance_id, sequence) and (instance_id, event_id) are unique.
    - records returned are copies.

    Beyond `commit`, a backend may offer (None where it does not; typed here, so that the
    engine needs no getattr): `submit`, which queues a batch on a group commit and returns
    the future of its durability, and `commit_now`, a commit without a coroutine (a store
    where nothing waits).
    """

    submit: Callable[[MachineBatch], asyncio.Future[None]] | None = None
    commit_now: Callable[[MachineBatch], None] | None = None

    async def open(self) -> None:
        """Nothing to connect: the store it belongs to (`Store.instances`) is open already."""

    async def close(self) -> None:
        """Flushes pending commits."""

    @abc.abstractmethod
    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        """Inserts an instance; with a `request_id` the tenant used already, returns
        (the existing instance, False) and writes nothing."""

    @abc.abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    @abc.abstractmethod
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
        """Ordered by id (ids sort by creation time)."""

    @abc.abstractmethod
    async def list_history(
        self, instance_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[HistoryRecord]:
        """Entries with sequence > after_sequence, ascending."""

    @abc.abstractmethod
    async def event_ids(self, instance_id: str) -> dict[str, int]:
        """Every event id the instance's history holds, with its entry's sequence."""

    @abc.abstractmethod
    async def list_timers(
        self,
        *,
        instance_id: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[TimerRecord]:
        """Armed timers, soonest first: every one (recovery re-arms them), one instance's, or
        those due before a time (the sweep fires timers their replica missed)."""

    @abc.abstractmethod
    async def list_invoking(self) -> list[InstanceRecord]:
        """ACTIVE instances whose current state runs an invoked execution (recovery waits
        for them again)."""

    @abc.abstractmethod
    async def commit(self, batch: MachineBatch) -> None:
        """Updates the instance (it must exist), appends history, replaces or drops timers."""


# Memory ------------------------------------------------------------------------------------


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
            self._timers[record.id][timer.key] = _copy_timer(timer)
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
        return [_copy_history(e) for e in entries[after_sequence : after_sequence + limit]]

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
                _copy_timer(t)
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
            self._timers[instance.id][timer.key] = _copy_timer(timer)


# SQL ---------------------------------------------------------------------------------------


class SqlMachineStore(MachineStore):
    """The machine tables in the database of an open SqlStore (SQLite or PostgreSQL).

    Commits go through the same group commit as executions (group_commit.py) on the shared
    SQL core (`SqlStore.database`: on SQLite, its single writer thread), with a writer of their
    own: the batches of many instances share one transaction and one fsync. A refused group
    is written batch by batch, so one bad batch (a stale writer's sequence, an unknown
    instance) fails alone; the engine then reloads that instance from the store.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database
        self._insert_once = database.insert(db.sm_instances).on_conflict_do_nothing(
            index_elements=[db.sm_instances.c.tenant, db.sm_instances.c.request_id]
        )
        self.writer: GroupCommit[MachineBatch] = GroupCommit(
            database, _write_group, _explain, name="agentrun-machine-writer"
        )

    @property
    def groups(self) -> int:
        """Group transactions written (tests see that grouping happens)."""
        return self.writer.groups

    async def open(self) -> None:
        self.writer.reopen()

    async def close(self) -> None:
        await self.writer.close()

    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        row = _instance_row(record)
        history_rows = [_history_row(e) for e in history]
        timer_rows = [_timer_row(t) for t in timers]

        def insert(conn: sa.Connection) -> tuple[InstanceRecord, bool]:
            if record.request_id is None:
                conn.execute(db.sm_instances.insert(), row)
            elif conn.execute(self._insert_once, row).rowcount == 0:
                existing = conn.execute(
                    sa.select(db.sm_instances).where(
                        db.sm_instances.c.tenant == record.tenant,
                        db.sm_instances.c.request_id == record.request_id,
                    )
                )
                return _instance_record(existing.one()), False
            if history_rows:
                conn.execute(db.sm_history.insert(), history_rows)
            if timer_rows:
                conn.execute(db.sm_timers.insert(), timer_rows)
            return copy_instance(record), True

        try:
            return await self._database.transaction(insert)
        except sa.exc.IntegrityError as exc:
            raise ValueError(
                f"instance {record.id} conflicts with a stored one: {exc.orig}"
            ) from exc

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        t = db.sm_instances
        rows = await self._database.read(sa.select(t).where(t.c.id == instance_id))
        return _instance_record(rows[0]) if rows else None

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
        t = db.sm_instances
        query = sa.select(t).where(t.c.tenant == tenant)
        if after_id is not None:
            query = query.where(t.c.id > after_id)
        if workflow is not None:
            query = query.where(t.c.workflow == workflow)
        if states:
            query = query.where(t.c.state.in_([str(s) for s in states]))
        if current is not None:
            query = query.where(t.c.current == current)
        query = query.order_by(t.c.id).limit(limit)
        return [_instance_record(row) for row in await self._database.read(query)]

    async def list_history(
        self, instance_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[HistoryRecord]:
        t = db.sm_history
        query = (
            sa.select(t)
            .where(t.c.instance_id == instance_id, t.c.sequence > after_sequence)
            .order_by(t.c.sequence)
            .limit(limit)
        )
        return [_history_record(row) for row in await self._database.read(query)]

    async def event_ids(self, instance_id: str) -> dict[str, int]:
        t = db.sm_history
        query = sa.select(t.c.event_id, t.c.sequence).where(
            t.c.instance_id == instance_id, t.c.event_id.is_not(None)
        )
        return {row.event_id: row.sequence for row in await self._database.read(query)}

    async def list_timers(
        self,
        *,
        instance_id: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[TimerRecord]:
        t = db.sm_timers
        query = sa.select(t)
        if instance_id is not None:
            query = query.where(t.c.instance_id == instance_id)
        if due_before is not None:
            query = query.where(t.c.fire_at <= due_before)
        query = query.order_by(t.c.fire_at)
        if limit is not None:
            query = query.limit(limit)
        rows = await self._database.read(query)
        return [TimerRecord(r.instance_id, r.key, r.state, r.timer_index, r.fire_at) for r in rows]

    async def list_invoking(self) -> list[InstanceRecord]:
        t = db.sm_instances
        query = (
            sa.select(t)
            .where(t.c.state == InstanceState.ACTIVE.value, t.c.invoke_execution.is_not(None))
            .order_by(t.c.id)
        )
        return [_instance_record(row) for row in await self._database.read(query)]

    # Group commit ------------------------------------------------------------------------
    def submit(self, batch: MachineBatch) -> asyncio.Future[None]:
        """Queues `batch` for the next group; the future resolves once it is durable."""
        return self.writer.submit(batch)

    async def commit(self, batch: MachineBatch) -> None:
        await self.writer.submit(batch)


def _write_group(conn: sa.Connection, group: Sequence[MachineBatch]) -> None:
    """Writes a group of batches (of distinct instances) in the writer's transaction."""
    instances: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    drop_all: list[dict[str, Any]] = []
    drop_one: list[dict[str, Any]] = []
    timers: list[dict[str, Any]] = []
    fenced: list[dict[str, Any]] = []
    for batch in group:
        rec = batch.instance
        if batch.base is None:
            instances[rec.id] = _changes(rec)
        else:
            fenced.append({**_changes(rec), "b_base": batch.base})
        history.extend(_history_row(e) for e in batch.history)
        if batch.timers is not None:
            drop_all.append({"b_id": rec.id})
            timers.extend(_timer_row(t) for t in batch.timers)
        elif batch.fired is not None:
            drop_one.append({"b_id": rec.id, "b_key": batch.fired})
        timers.extend(_timer_row(t) for t in batch.added)
    if instances:
        result = conn.execute(_UPDATE, list(instances.values()))
        if 0 <= result.rowcount < len(instances):
            raise KeyError("a batch updates an instance that does not exist")
    for params in fenced:  # one by one: executemany has no row count on every driver
        if conn.execute(_UPDATE_FENCED, params).rowcount != 1:
            raise KeyError(f"instance {params['b_id']} is gone or moved on")
    if history:
        conn.execute(db.sm_history.insert(), history)
    if drop_one:
        conn.execute(_DROP_TIMER, drop_one)
    if drop_all:
        conn.execute(_DROP_TIMERS, drop_all)
    if timers:
        conn.execute(db.sm_timers.insert(), timers)


async def _explain(_batch: MachineBatch, exc: Exception) -> BaseException:
    """The error the caller of a batch refused alone gets."""
    if isinstance(exc, (sa.exc.IntegrityError, KeyError)):
        return ValueError(f"a batch conflicts with stored rows: {getattr(exc, 'orig', exc)}")
    if isinstance(exc, ValueError):
        return exc
    return StoreError(f"commit failed: {exc!r}")


_MUTABLE = (
    "state",
    "current",
    "data",
    "error",
    "updated_at",
    "ended_at",
    "last_sequence",
    "entry_sequence",
    "invoke_execution",
    "labels",
    "pending",
)

_UPDATE = (
    db.sm_instances.update()
    .where(db.sm_instances.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(name) for name in _MUTABLE})
)
_UPDATE_FENCED = _UPDATE.where(db.sm_instances.c.last_sequence == sa.bindparam("b_base"))
_DROP_TIMERS = db.sm_timers.delete().where(db.sm_timers.c.instance_id == sa.bindparam("b_id"))
_DROP_TIMER = db.sm_timers.delete().where(
    db.sm_timers.c.instance_id == sa.bindparam("b_id"),
    db.sm_timers.c.key == sa.bindparam("b_key"),
)


def _changes(r: InstanceRecord) -> dict[str, Any]:
    return {
        "b_id": r.id,
        "state": r.state.value,
        "current": r.current,
        "data": r.data,
        "error": r.error,
        "updated_at": r.updated_at,
        "ended_at": r.ended_at,
        "last_sequence": r.last_sequence,
        "entry_sequence": r.entry_sequence,
        "invoke_execution": r.invoke_execution,
        "labels": r.labels,
        "pending": r.pending,
    }


def _instance_row(r: InstanceRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant": r.tenant,
        "workflow": r.workflow,
        "version": r.version,
        "state": r.state.value,
        "current": r.current,
        "data": r.data,
        "input": r.input,
        "error": r.error,
        "request_id": r.request_id,
        "request_hash": r.request_hash,
        "parent_id": r.parent_id,
        "parent_node": r.parent_node,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "ended_at": r.ended_at,
        "last_sequence": r.last_sequence,
        "entry_sequence": r.entry_sequence,
        "invoke_execution": r.invoke_execution,
        "labels": r.labels,
        "pending": r.pending,
    }


def _instance_record(row: Any) -> InstanceRecord:
    return InstanceRecord(
        id=row.id,
        tenant=row.tenant,
        workflow=row.workflow,
        version=row.version,
        state=InstanceState(row.state),
        current=row.current,
        data=row.data if row.data is not None else {},
        input=row.input,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        error=row.error,
        request_id=row.request_id,
        request_hash=row.request_hash,
        parent_id=row.parent_id,
        parent_node=row.parent_node,
        last_sequence=row.last_sequence,
        entry_sequence=row.entry_sequence,
        invoke_execution=row.invoke_execution,
        labels=row.labels if row.labels is not None else {},
        pending=row.pending,
    )


def _history_row(e: HistoryRecord) -> dict[str, Any]:
    return {
        "instance_id": e.instance_id,
        "sequence": e.sequence,
        "kind": e.kind.value,
        "time": e.time,
        "event": e.event,
        "event_id": e.event_id,
        "event_data": e.event_data,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "transition_index": e.transition_index,
        "actions": e.actions,
        "assigned": e.assigned,
        "instance_state": e.instance_state.value,
        "error": e.error,
        "reentered": e.reentered,
    }


def _history_record(row: Any) -> HistoryRecord:
    return HistoryRecord(
        instance_id=row.instance_id,
        sequence=row.sequence,
        kind=EntryKind(row.kind),
        time=row.time,
        event=row.event,
        event_id=row.event_id,
        event_data=row.event_data,
        from_state=row.from_state,
        to_state=row.to_state,
        transition_index=row.transition_index,
        actions=row.actions,
        assigned=row.assigned,
        instance_state=InstanceState(row.instance_state),
        error=row.error,
        reentered=bool(row.reentered),
    )


def _timer_row(t: TimerRecord) -> dict[str, Any]:
    return {
        "instance_id": t.instance_id,
        "key": t.key,
        "state": t.state,
        "timer_index": t.index,
        "fire_at": t.fire_at,
    }
