"""`SqlMachineStore`: state machine instances, their history and timers in a SQL store's
database (`SqlStore.database`: same database, same migrations, same writer thread on SQLite),
through the shared group commit: the batches of many instances committed at once share one
transaction and one fsync. Imported only when a SQL store is opened (`SqlStore.instances`), so
a process on the memory store never loads SQLAlchemy. Its rows <-> records and read statements
are in machine_rows.py, the transaction's way of its commits in machine_writes.py.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.machine_base import (
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
    copy_instance,
)
from agentrun.storage.machine_rows import (
    FOLDED,
    FOLDED_CURRENT,
    SELECT,
    folded_record,
    history_record,
    history_row,
    inputs_of,
    instance_record,
    instance_row,
    timer_row,
)
from agentrun.storage.machine_writes import explain, write_group
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

    # PostgreSQL: `pg_notify` in the commit (pg_instances.py, or `write_group`); SQLite: its
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
        # it (`FOLDED`). PostgreSQL's always rewrite the row.
        folded = database.dialect == "sqlite"
        self._select = FOLDED if folded else SELECT
        self._record = folded_record if folded else instance_record
        self._current = FOLDED_CURRENT if folded else db.sm_instances.c.current
        self._folded = folded
        if self._now is not None:
            self.write_at_once = self._write_at_once
            # Its writes at once stop when they kept the loop from going round too long: a
            # committer that gives the loop a turn first writes at once again (instances.py).
            assert isinstance(self._direct, SqliteInstanceWriter)
            self.yield_first = self._direct.streak_spent
        self._written_now = 0
        self.writer: GroupCommit[MachineBatch] = database.group_commit(
            functools.partial(write_group, database),
            explain,
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
        row = instance_row(record)
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
        return [history_record(row) for row in await self._database.read(query)]

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
        ids: Sequence[str] | None = None,
    ) -> list[InstanceRecord]:
        t = db.sm_instances
        expired = sa.or_(t.c.owner.is_(None), sa.func.coalesce(t.c.lease_expires_at, 0.0) < now)
        free = sa.and_(expired, sa.or_(t.c.owner.is_(None), t.c.owner != owner))
        if include_own:
            free = sa.or_(free, t.c.owner == owner)
        if after_id is not None:
            free = sa.and_(free, t.c.id > after_id)
        if ids is not None:
            free = sa.and_(free, t.c.id.in_(list(ids)))
        candidates = (
            sa.select(t.c.id)
            .where(t.c.state == InstanceState.ACTIVE.value, free, _driven())
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
                return [folded_record(row) for row in conn.execute(again)]
            inputs = inputs_of(conn, [row.id for row in rows])
            return [instance_record(row, inputs.get(row.id)) for row in rows]

        return await self._database.transaction(claim, leases=True)

    async def held_instances(self, owner: str) -> set[str]:
        """Ids only (no record is read)."""
        t = db.sm_instances
        statement = sa.select(t.c.id).where(
            t.c.owner == owner, t.c.state == InstanceState.ACTIVE.value, _driven()
        )
        return {row[0] for row in await self._database.read(statement)}

    async def release_leases(self, owner: str) -> None:
        t = db.sm_instances
        statement = t.update().where(t.c.owner == owner).values(lease_expires_at=0.0)
        await self._database.transaction(lambda conn: conn.execute(statement), leases=True)


def _driven() -> sa.ColumnElement[bool]:
    """An instance with something to drive: a pending event, an invoked execution, a timer."""
    t, timers = db.sm_instances, db.sm_timers
    return sa.or_(
        t.c.pending.is_not(None),
        t.c.invoke_execution.is_not(None),
        sa.exists().where(timers.c.instance_id == t.c.id),
    )
