"""`SqlMachineStore`: state machine instances, their history and timers in a SQL store's
database (`SqlStore.database`: same database, same migrations, same writer thread on SQLite),
through the shared group commit: the batches of many instances committed at once share one
transaction and one fsync. Imported only when a SQL store is opened (`SqlStore.instances`), so
a process on the memory store never loads SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import LeaseLost, StoreError
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.machine_base import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
    copy_instance,
)
from agentrun.storage.sqldb import SqlDatabase, claim_leases
from agentrun.storage.sqlite_instances import SqliteInstanceWriter

__all__ = ["SqlMachineStore"]


class SqlMachineStore(MachineStore):
    """The machine tables in the database of an open SqlStore (SQLite or PostgreSQL).

    Commits go through the same group commit as executions (group_commit.py) on the shared
    SQL core (`SqlStore.database`: on SQLite, its single writer thread), with a writer of their
    own: the batches of many instances share one transaction and one fsync. A refused group
    is written batch by batch, so one bad batch (a stale writer's sequence, an unknown
    instance) fails alone; the engine then reloads that instance from the store.
    """

    # PostgreSQL: `pg_notify` in the commit (pg_instances.py, or `_write_group`); SQLite: its
    # pollers read the new history rows.
    announces = True

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database
        self._insert_once = database.insert(db.sm_instances).on_conflict_do_nothing(
            index_elements=[db.sm_instances.c.tenant, db.sm_instances.c.request_id]
        )
        # The dialect's own commits (pg_instances.py, sqlite_instances.py); None elsewhere.
        self._direct = database.instance_writer()
        # SQLite: a commit the group would write alone on the loop's thread anyway is written
        # by `submit` itself, without the writer task's two loop turns and wake-ups.
        self._now = (
            self._direct.write_now if isinstance(self._direct, SqliteInstanceWriter) else None
        )
        # SQLite's commits may leave an instance's row as it was, its newer current,
        # updated_at, last_sequence and entry_sequence in its newest history entry: read with
        # it (`_FOLDED`). PostgreSQL's always rewrite the row.
        folded = database.dialect == "sqlite"
        self._select = _FOLDED if folded else _SELECT
        self._record = _folded_record if folded else _instance_record
        self._current = _FOLDED_CURRENT if folded else db.sm_instances.c.current
        self._folded = folded
        if self._now is not None:
            self.write_at_once = self._write_at_once
            # Its writes at once stop when they kept the loop from going round too long: a
            # committer that gives the loop a turn first writes at once again (instances.py).
            assert isinstance(self._direct, SqliteInstanceWriter)
            self.yield_first = self._direct.streak_spent
        self._written_now = 0
        self.writer: GroupCommit[MachineBatch] = database.group_commit(
            functools.partial(_write_group, database),
            _explain,
            name="agentrun-machine-writer",
            direct=self._direct,
        )

    @property
    def groups(self) -> int:
        """Group transactions written, by the writer or by `submit` itself (tests see that
        grouping happens)."""
        return self.writer.groups + self._written_now

    async def open(self) -> None:
        self.writer.reopen()
        if self._direct is not None:
            await self._direct.prepare()

    async def close(self) -> None:
        await self.writer.close()

    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        row = _instance_row(record)
        given = None if record.input is None else {"instance_id": record.id, "input": record.input}
        history_rows = [history_row(e) for e in history]
        timer_rows = [timer_row(t) for t in timers]

        def insert(conn: sa.Connection) -> tuple[InstanceRecord, bool]:
            if record.request_id is None:
                conn.execute(db.sm_instances.insert(), row)
            elif conn.execute(self._insert_once, row).rowcount == 0:
                existing = conn.execute(
                    self._select.where(
                        db.sm_instances.c.tenant == record.tenant,
                        db.sm_instances.c.request_id == record.request_id,
                    )
                )
                return self._record(existing.one()), False
            if given is not None:
                conn.execute(db.sm_inputs.insert(), given)
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
        rows = await self._database.read(self._select.where(t.c.id == instance_id))
        return self._record(rows[0]) if rows else None

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
        query = self._select.where(t.c.tenant == tenant)
        if after_id is not None:
            query = query.where(t.c.id > after_id)
        if workflow is not None:
            query = query.where(t.c.workflow == workflow)
        if states:
            query = query.where(t.c.state.in_([str(s) for s in states]))
        if current is not None:
            query = query.where(self._current == current)
        query = query.order_by(t.c.id).limit(limit)
        return [self._record(row) for row in await self._database.read(query)]

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
        query = self._select.where(
            t.c.state == InstanceState.ACTIVE.value, t.c.invoke_execution.is_not(None)
        ).order_by(t.c.id)
        return [self._record(row) for row in await self._database.read(query)]

    # Group commit ------------------------------------------------------------------------
    def submit(self, batch: MachineBatch) -> asyncio.Future[None]:
        """Queues `batch` for the next group; the future resolves once it is durable (on
        SQLite, done already when it was written at once: `_now`)."""
        now = self._now
        if now is not None and self.writer.idle and self._database.is_open and now(batch):
            self._written_now += 1
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future
        return self.writer.submit(batch)

    async def commit(self, batch: MachineBatch) -> None:
        await self.submit(batch)

    def _write_at_once(self, batch: MachineBatch) -> bool:
        """`write_at_once` (SQLite): `batch` written now, as `submit` writes it when it can,
        without the future `submit` would make; False: nothing written."""
        now = self._now
        if now is not None and self.writer.idle and self._database.is_open and now(batch):
            self._written_now += 1
            return True
        return False

    # Leases ------------------------------------------------------------------------------
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
        t = db.sm_instances
        where = [t.c.id == instance_id]
        if tenant is not None:
            where.append(t.c.tenant == tenant)
        mine = t.c.owner == owner
        if not take:
            where.append(
                sa.or_(mine, t.c.owner.is_(None), sa.func.coalesce(t.c.lease_expires_at, 0.0) < now)
            )
        statement = (
            t.update()
            .where(*where)
            .values(
                owner=owner,
                lease_epoch=sa.case((mine, t.c.lease_epoch), else_=t.c.lease_epoch + 1),
                lease_expires_at=now + lease_seconds,
            )
        )

        def acquire(conn: sa.Connection) -> InstanceRecord | None:
            if conn.execute(statement).rowcount != 1:
                return None
            return self._record(conn.execute(self._select.where(t.c.id == instance_id)).one())

        return await self._database.transaction(acquire, leases=True)

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        t = db.sm_instances
        mine = (
            sa.select(t.c.id)
            .where(t.c.owner == owner, t.c.state == InstanceState.ACTIVE.value)
            .order_by(t.c.id)
            .with_for_update()
        )

        def renew(conn: sa.Connection) -> set[str]:
            # Locked in id order first (as fenced commits lock them), then extended.
            ids = [row.id for row in conn.execute(mine)]
            if ids:
                conn.execute(
                    t.update().where(t.c.id.in_(ids)).values(lease_expires_at=now + lease_seconds)
                )
            return set(ids)

        return await self._database.transaction(renew, leases=True)

    async def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int,
        include_own: bool = False,
        after_id: str | None = None,
    ) -> list[InstanceRecord]:
        t, timers = db.sm_instances, db.sm_timers
        expired = sa.or_(t.c.owner.is_(None), sa.func.coalesce(t.c.lease_expires_at, 0.0) < now)
        free = sa.and_(expired, sa.or_(t.c.owner.is_(None), t.c.owner != owner))
        if include_own:
            free = sa.or_(free, t.c.owner == owner)
        if after_id is not None:
            free = sa.and_(free, t.c.id > after_id)
        driven = sa.or_(
            t.c.pending.is_not(None),
            t.c.invoke_execution.is_not(None),
            sa.exists().where(timers.c.instance_id == t.c.id),
        )
        candidates = (
            sa.select(t.c.id)
            .where(t.c.state == InstanceState.ACTIVE.value, free, driven)
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        folded = self._folded

        def claim(conn: sa.Connection) -> list[InstanceRecord]:
            rows = claim_leases(
                conn, t, candidates, owner=owner, now=now, lease_seconds=lease_seconds
            )
            if folded and rows:  # read again with their newest entries (and inputs)
                again = self._select.where(t.c.id.in_([row.id for row in rows])).order_by(t.c.id)
                return [_folded_record(row) for row in conn.execute(again)]
            inputs = _inputs(conn, [row.id for row in rows])
            return [_instance_record(row, inputs.get(row.id)) for row in rows]

        return await self._database.transaction(claim, leases=True)

    async def release_leases(self, owner: str) -> None:
        t = db.sm_instances
        statement = t.update().where(t.c.owner == owner).values(lease_expires_at=0.0)
        await self._database.transaction(lambda conn: conn.execute(statement), leases=True)


def _write_group(database: SqlDatabase, conn: sa.Connection, group: Sequence[MachineBatch]) -> None:
    """Writes a group of batches (of distinct instances) in the writer's transaction; each
    statement through `database.executemany` (on SQLite straight to sqlite3: SQLAlchemy's
    per-statement work cost several times the statement on this hot path)."""
    many = database.executemany
    instances: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    drop_all: list[dict[str, Any]] = []
    drop_one: list[dict[str, Any]] = []
    timers: list[dict[str, Any]] = []
    fenced: list[dict[str, Any]] = []
    # SQLite counts the rows of an executemany: the fence is the update's own condition there.
    # PostgreSQL's driver does not: the fence is checked first, locking the rows in id order,
    # as renewals lock them (no deadlock between the two).
    sqlite = conn.dialect.name == "sqlite"
    leased: dict[str, dict[str, Any]] = {}
    if not sqlite:
        leases = sorted({(b.instance.id, *b.fence) for b in group if b.fence is not None})
        if leases:
            held = conn.execute(
                sa.select(db.sm_instances.c.id)
                .where(sa.tuple_(*_LEASE).in_(leases))
                .order_by(db.sm_instances.c.id)
                .with_for_update()
            ).all()
            if len(held) < len(leases):
                raise LeaseLost("an instance is leased to another replica or epoch")
    for batch in group:
        rec = batch.instance
        if batch.base is not None:
            params = {**instance_changes(rec), "b_base": batch.base}
            if sqlite and batch.fence is not None:
                params["b_owner"], params["b_epoch"] = batch.fence
            fenced.append(params)
        elif sqlite and batch.fence is not None:
            row = leased[rec.id] = instance_changes(rec)
            row["b_owner"], row["b_epoch"] = batch.fence
        else:
            instances[rec.id] = instance_changes(rec)
        history.extend(history_row(e) for e in batch.history)
        if batch.timers is not None:
            drop_all.append({"b_id": rec.id})
            timers.extend(timer_row(t) for t in batch.timers)
        elif batch.fired is not None:
            drop_one.append({"b_id": rec.id, "b_key": batch.fired})
        timers.extend(timer_row(t) for t in batch.added)
    if leased and many(conn, _UPDATE_LEASED, list(leased.values())) < len(leased):
        raise LeaseLost("an instance is leased to another replica or epoch (or gone)")
    if instances:
        changed = many(conn, _UPDATE, list(instances.values()))
        if 0 <= changed < len(instances):
            raise KeyError("a batch updates an instance that does not exist")
    for params in fenced:  # one by one: executemany has no row count on every driver
        if sqlite:  # the base against the last sequence as readers fold it (`_FOLDED`)
            statement = _FOLDED_BASE_LEASED if "b_owner" in params else _FOLDED_BASE
        else:
            statement = _UPDATE_BASE_LEASED if "b_owner" in params else _UPDATE_FENCED
        if many(conn, statement, [params]) != 1:
            raise KeyError(f"instance {params['b_id']} is gone or moved on")
    many(conn, _INSERT_HISTORY, history)
    many(conn, _DROP_TIMER, drop_one)
    many(conn, _DROP_TIMERS, drop_all)
    many(conn, _INSERT_TIMERS, timers)
    if history:
        # Delivered at commit: Watch streams on other replicas read the new entries.
        database.notify_in(conn, "events", sorted({row["instance_id"] for row in history}))


async def _explain(_batch: MachineBatch, exc: Exception) -> BaseException:
    """The error the caller of a batch refused alone gets."""
    if isinstance(exc, LeaseLost):
        return exc
    if isinstance(exc, (sa.exc.IntegrityError, KeyError)):
        return ValueError(f"a batch conflicts with stored rows: {getattr(exc, 'orig', exc)}")
    if isinstance(exc, ValueError):
        return exc
    return StoreError(f"commit failed: {exc!r}")


# The instance columns a commit changes (pg_instances.py writes the same).
MUTABLE = (
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
    .values({name: sa.bindparam(name) for name in MUTABLE})
)
_UPDATE_FENCED = _UPDATE.where(db.sm_instances.c.last_sequence == sa.bindparam("b_base"))
_LEASE = (db.sm_instances.c.id, db.sm_instances.c.owner, db.sm_instances.c.lease_epoch)
_HOLDER = (
    db.sm_instances.c.owner == sa.bindparam("b_owner"),
    db.sm_instances.c.lease_epoch == sa.bindparam("b_epoch"),
)
_UPDATE_LEASED = _UPDATE.where(*_HOLDER)
_UPDATE_BASE_LEASED = _UPDATE_FENCED.where(*_HOLDER)
# Built once: SqliteDatabase.executemany keeps each statement's compiled form.
_INSERT_HISTORY = db.sm_history.insert()
_INSERT_TIMERS = db.sm_timers.insert()
_DROP_TIMERS = db.sm_timers.delete().where(db.sm_timers.c.instance_id == sa.bindparam("b_id"))
_DROP_TIMER = db.sm_timers.delete().where(
    db.sm_timers.c.instance_id == sa.bindparam("b_id"),
    db.sm_timers.c.key == sa.bindparam("b_key"),
)


def instance_changes(r: InstanceRecord) -> dict[str, Any]:
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
        "owner": r.owner,
        "lease_epoch": r.lease_epoch,
        "lease_expires_at": r.lease_expires_at,
    }


# An instance's row with its input (`sm_inputs`: none when the input is None), as the readers
# read it.
_SELECT = sa.select(*db.sm_instances.c, db.sm_inputs.c.input).select_from(
    db.sm_instances.outerjoin(db.sm_inputs, db.sm_inputs.c.instance_id == db.sm_instances.c.id)
)


# SQLite: an instance's row with its newest history entry, when that entry is past the row's
# last_sequence and holds the instance's entry_sequence (sqlite_instances.py wrote it in place
# of rewriting the row): its to_state, time, sequence and entry_sequence are the instance's
# current, updated_at, last_sequence and entry_sequence (`_folded_record`). A primary key
# seek and lookup more per row.
_MOVED = db.sm_history.alias("moved")
# (max(), not ORDER BY ... LIMIT 1: SQLite reads max() off the key's b-tree, the other way
# walked the instance's entries; and no parameter of its own, for SqliteDatabase.executemany.)
_NEWEST = (
    sa.select(sa.func.max(db.sm_history.c.sequence))
    .where(db.sm_history.c.instance_id == db.sm_instances.c.id)
    .correlate(db.sm_instances)
    .scalar_subquery()
)
_FOLDED = sa.select(
    *db.sm_instances.c,
    db.sm_inputs.c.input,
    _MOVED.c.sequence.label("moved_sequence"),
    _MOVED.c.to_state.label("moved_current"),
    _MOVED.c.time.label("moved_time"),
    _MOVED.c.entry_sequence.label("moved_entry"),
).select_from(
    db.sm_instances.outerjoin(
        db.sm_inputs, db.sm_inputs.c.instance_id == db.sm_instances.c.id
    ).outerjoin(
        _MOVED,
        sa.and_(
            _MOVED.c.instance_id == db.sm_instances.c.id,
            _MOVED.c.sequence == _NEWEST,
            _MOVED.c.sequence > db.sm_instances.c.last_sequence,
            _MOVED.c.entry_sequence.is_not(None),
        ),
    )
)
_FOLDED_CURRENT = sa.func.coalesce(_MOVED.c.to_state, db.sm_instances.c.current)
# The instance's last sequence as `_FOLDED` reads it (SQLite's scalar max), for a base.
_FOLDED_LAST = sa.func.max(
    db.sm_instances.c.last_sequence, sa.func.coalesce(_NEWEST, sa.literal_column("0"))
)
_FOLDED_BASE = _UPDATE.where(_FOLDED_LAST == sa.bindparam("b_base"))
_FOLDED_BASE_LEASED = _FOLDED_BASE.where(*_HOLDER)


def _folded_record(row: Any) -> InstanceRecord:
    """The record of a row `_FOLDED` read."""
    record = _instance_record(row)
    if row.moved_sequence is not None:
        record.current = row.moved_current
        record.updated_at = row.moved_time
        record.last_sequence = row.moved_sequence
        record.entry_sequence = row.moved_entry
    return record


_FROM_ROW: Any = object()


def _inputs(conn: sa.Connection, ids: Sequence[str]) -> dict[str, Any]:
    """The inputs of the instances `ids` that have one (claimed rows come back without)."""
    if not ids:
        return {}
    i = db.sm_inputs
    rows = conn.execute(sa.select(i.c.instance_id, i.c.input).where(i.c.instance_id.in_(ids)))
    return {row.instance_id: row.input for row in rows}


def _instance_record(row: Any, input: Any = _FROM_ROW) -> InstanceRecord:
    """The record of a row `_SELECT` read (its input with it), or of an instance row alone
    and its `input`."""
    return InstanceRecord(
        id=row.id,
        tenant=row.tenant,
        workflow=row.workflow,
        version=row.version,
        state=InstanceState(row.state),
        current=row.current,
        data=row.data if row.data is not None else {},
        input=row.input if input is _FROM_ROW else input,
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
        owner=row.owner,
        lease_epoch=row.lease_epoch,
        lease_expires_at=row.lease_expires_at,
    )


def history_row(e: HistoryRecord) -> dict[str, Any]:
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


def timer_row(t: TimerRecord) -> dict[str, Any]:
    return {
        "instance_id": t.instance_id,
        "key": t.key,
        "state": t.state,
        "timer_index": t.index,
        "fire_at": t.fire_at,
    }
