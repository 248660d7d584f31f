"""Executions in a SQL database: their nodes, events and signals, and the group commit. Their
leases are `ExecutionLeases`' (execution_leases.py), the reads that rebuild runs
`ExecutionRestores`' (execution_restore.py).

`commit` is on the engine's hot path (one per node completion), so it goes through the group
commit (group_commit.py): concurrent batches share one transaction and one fsync, and each
hot statement runs once for all their rows (`SqlDatabase.executemany`: on SQLite straight to
sqlite3). Fencing (a replica that lost an execution's lease writes nothing) is the execution
row's UPDATE itself (`... WHERE owner = :o AND lease_epoch = :e`, its row count checked), the
first statement of the transaction; on SQLite's turn writer, for a turn that only appends
events, a read of the row under the transaction's write lock, the row left as it is
(sqlite_turns.py): there the records are read with the newest event's sequence folded in
(`schema.FOLDED_EXECUTIONS`, migration 0026).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import ExecutionRepository, LeaseLost, StoreError
from agentrun.storage.execution_leases import UNFINISHED, ExecutionLeases
from agentrun.storage.execution_restore import ExecutionRestores
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.records import (
    RUN_FIELDS,
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)
from agentrun.storage.sqldb import SqlDatabase
from agentrun.storage.sqlite_turns import SqliteTurnWriter

__all__ = ["SqlExecutions"]


class SqlExecutions(ExecutionLeases, ExecutionRestores, ExecutionRepository):
    """Errors, as the memory store raises them: StoreError when the database is unavailable
    (retry later), KeyError for a batch or signal naming an unknown execution, ValueError for
    anything the database refuses (a duplicate event sequence or execution id, a value JSON
    cannot hold, U+0000 or NaN in PostgreSQL's JSONB). A `commit` whose caller is cancelled
    may still be written: its batch is already queued."""

    def __init__(self, database: SqlDatabase) -> None:
        self.database = database
        insert = database.insert
        # Built once: constructing an upsert costs more than executing it on the hot path.
        upsert = insert(db.nodes)
        self._upsert_nodes = upsert.on_conflict_do_update(
            index_elements=list(db.nodes.primary_key.columns),
            set_={c.name: upsert.excluded[c.name] for c in db.nodes.c if not c.primary_key},
        )
        # An idempotent start: a used (tenant, request_id) inserts nothing.
        self._insert_once = insert(db.executions).on_conflict_do_nothing(
            index_elements=[db.executions.c.tenant, db.executions.c.request_id]
        )
        # SQLite's turns may leave an execution's row as it was, its newer last sequence in
        # its newest event only: its records are read with it (schema.FOLDED_EXECUTIONS).
        self._columns = db.FOLDED_EXECUTIONS if database.dialect == "sqlite" else [*db.executions.c]
        self._get = _GET_FOLDED if database.dialect == "sqlite" else _GET_EXECUTION
        direct = database.turn_writer()
        self.writer: GroupCommit[_Rows] = database.group_commit(
            self._apply, self._explain, name="agentrun-sql-writer", direct=direct
        )
        # SQLite: a turn the group commit would write alone on the loop's thread anyway is
        # written by `commit` itself, without the writer task's two loop turns and wake-ups.
        self._now = direct.write_now if isinstance(direct, SqliteTurnWriter) else None
        self._spent = direct.streak_spent if isinstance(direct, SqliteTurnWriter) else None
        self.written_now = 0
        # `commit_at_once` where it can ever write (SQLite), else None: `SqlStore.commit_at_once`.
        self.at_once = self.commit_at_once if self._now is not None else None
        # A signal takes the next seq of its execution; a used signal id inserts nothing.
        # Built once, as the upsert: a statement built per signal cost more than its insert.
        self._add_signal = (
            insert(db.signals)
            .values(_NEXT_SIGNAL)
            .on_conflict_do_nothing(
                index_elements=[db.signals.c.execution_id, db.signals.c.signal_id]
            )
            .returning(db.signals.c.seq)
        )

    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        try:
            created: tuple[ExecutionRecord, bool] = await self.create_soon(record, nodes, events)
            return created
        except sa.exc.IntegrityError as exc:
            raise ValueError(
                f"execution {record.id} conflicts with a stored one: {exc.orig}"
            ) from exc

    def create_soon(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> asyncio.Future[tuple[ExecutionRecord, bool]]:
        """The creation queued on the group commit (concurrent starts share one transaction,
        one fsync): its future, which completes once the rows are durable, awaited or not
        (`SqlStore.create_execution_soon`). The group commit refuses a conflicting create
        with ValueError (`_explain`)."""
        self.database.require_open()
        if self._now is not None and _own(record.id, nodes, events):
            # SQLite: its records, written by the turn writer straight from them
            # (sqlite_turns.py `write_turns`); rows only if the transaction's way takes it.
            return self.writer.submit(_Rows.of_records(record, nodes, events))
        rows = _Rows(
            execution=None,
            nodes=[db.node_row(n) for n in nodes],
            events=[db.event_row(e) for e in events],
            consumed=[],
            create=record,
            create_row=db.execution_row(record),
        )
        return self.writer.submit(rows)

    def _insert_execution(self, conn: sa.Connection, rows: _Rows) -> tuple[ExecutionRecord, bool]:
        """Inserts a new execution; with a request_id already used by the tenant, returns the
        stored one and writes nothing else of this batch (the unique constraint decides)."""
        record, row = rows.create, rows.create_row
        assert record is not None and row is not None
        if record.request_id is None:
            conn.execute(db.executions.insert(), row)
        elif conn.execute(self._insert_once, row).rowcount == 0:
            existing = conn.execute(
                sa.select(*self._columns).where(
                    db.executions.c.tenant == record.tenant,
                    db.executions.c.request_id == record.request_id,
                )
            )
            rows.nodes, rows.events = [], []
            return db.execution_record(existing.one()), False
        return copy.copy(record), True

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        rows = await self.database.read_now(self._get, {"b_id": execution_id})
        return db.execution_record(rows[0]) if rows else None

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
        query = sa.select(*self._columns).where(db.executions.c.tenant == tenant)
        ident, created = db.executions.c.id, db.executions.c.created_at
        if after_id is not None:
            query = query.where(ident < after_id if newest_first else ident > after_id)
        if workflow is not None:
            query = query.where(db.executions.c.workflow == workflow)
        if states:
            query = query.where(db.executions.c.state.in_([str(s) for s in states]))
        if created_after is not None:
            query = query.where(created >= created_after)
        if created_before is not None:
            query = query.where(created < created_before)
        query = query.order_by(ident.desc() if newest_first else ident).limit(limit)
        return [db.execution_record(row) for row in await self.database.read(query)]

    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        query = (
            sa.select(*self._columns)
            .where(db.executions.c.state.in_(UNFINISHED))
            .order_by(db.executions.c.id)
        )
        return [db.execution_record(row) for row in await self.database.read(query)]

    async def get_nodes(self, execution_id: str) -> list[NodeRecord]:
        """Ordered by node id (SQL has no insertion order to offer)."""
        query = (
            sa.select(db.nodes)
            .where(db.nodes.c.execution_id == execution_id)
            .order_by(db.nodes.c.node_id)
        )
        return [db.node_record(row) for row in await self.database.read(query)]

    async def list_waits(
        self,
        tenant: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[NodeRecord]:
        nodes, executions = db.nodes, db.executions
        query = (
            sa.select(nodes)
            .join(executions, executions.c.id == nodes.c.execution_id)
            .where(
                executions.c.tenant == tenant,
                executions.c.state.in_(UNFINISHED),
                nodes.c.state == NodeState.WAITING.value,
                nodes.c.wait.is_not(None),
            )
        )
        if execution_id is not None:
            query = query.where(nodes.c.execution_id == execution_id)
        if after is not None:
            query = query.where(
                sa.tuple_(nodes.c.execution_id, nodes.c.node_id) > sa.tuple_(*after)
            )
        query = query.order_by(nodes.c.execution_id, nodes.c.node_id).limit(limit)
        return [db.node_record(row) for row in await self.database.read(query)]

    def commit_at_once(self, batch: Batch) -> bool:
        """`commit` without a coroutine, when SQLite writes `batch` at once (the turn writer's
        `write_now`: the group commit idle, the loop gone round within the streak): whether it
        was written; False: nothing written, and `commit` takes it (another way, or the same
        after a loop turn). The engine's run tries it first (`Store.commit_at_once`): a chain
        step's turn then awaits no coroutines (`Store.commit`, this one's `commit`)."""
        now = self._now
        if now is not None and self.writer.idle and self.database.is_open and now(batch):
            self.written_now += 1
            return True
        return False

    async def commit(self, batch: Batch) -> None:
        self.database.require_open()
        # Written at once from the records themselves (no snapshot: nothing runs meanwhile).
        if self._now is not None and self.writer.idle:
            if self.commit_at_once(batch):
                return
            spent = self._spent
            if spent is not None and spent():
                # The writes at once kept the loop from going round too long (a run whose
                # turns never wait: on a disk's fsync, ~11 chain steps of 16 between its own
                # yields): one loop turn, and this batch is written at once again, not by the
                # group commit's writer task and thread, whose hand-offs and wake-ups cost
                # each such turn more than its commit (step_floor.py's chain, 7 Dec 2026: ~9
                # turns in 100 went that way). Its caller awaits it: its records stay as they
                # are meanwhile.
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    # Queued all the same, as a cancelled caller's group commit batch is
                    # (its future cancelled as theirs is: the writer still writes the batch).
                    self.writer.submit(_Rows.of(batch)).cancel()
                    raise
                if self.commit_at_once(batch):
                    return
        # Snapshot now: the caller may change its records (not payloads) once we return.
        await self.writer.submit(_Rows.of(batch))

    # Group commit ----------------------------------------------------------
    def _apply(self, conn: sa.Connection, batches: Sequence[_Rows]) -> list[Any]:
        """Writes a group of batches in the writer's transaction; returns what each caller
        gets ((record, created) for a create, None for a commit)."""
        # Later batches win, exactly as if the upserts had run one after another; dedup also
        # keeps PostgreSQL from seeing one key twice in a statement.
        execution_rows: dict[str, dict[str, Any]] = {}
        node_rows: dict[tuple[str, str], dict[str, Any]] = {}
        event_rows: list[dict[str, Any]] = []
        consumed: list[dict[str, Any]] = []
        signals: list[dict[str, Any]] = []
        # New executions first: later batches of the same group may write to them. In key
        # order, so that two replicas' groups never wait on each other's unique keys in a cycle.
        for batch in batches:
            if batch.records is not None:
                batch.materialize()
        creates = sorted((b for b in batches if b.create is not None), key=_Rows.create_key)
        for batch in creates:
            batch.result = self._insert_execution(conn, batch)
        fences: dict[str, tuple[str, int]] = {}
        for batch in batches:
            if batch.execution is not None:
                execution_rows[batch.execution["b_id"]] = batch.execution
                if batch.fence is not None:
                    fences[batch.execution["b_id"]] = batch.fence
            for row in batch.nodes:
                node_rows[(row["execution_id"], row["node_id"])] = row
            event_rows += batch.events
            consumed += batch.consumed
            signals += batch.signals
        # Execution rows first: a replica that lost a lease must not write anything. The
        # fence is part of the UPDATE (`... AND owner = :o AND lease_epoch = :e`): a stale row
        # is not changed, and a count short of the rows refuses the whole group. In id order,
        # the order renew_leases locks rows in on PostgreSQL: no deadlock between the two.
        # Only what a run changes is written (the row exists: create_execution made it), so a
        # large input is not rewritten at every step. Each statement runs once for all rows
        # (`SqlDatabase.executemany`: on SQLite straight to sqlite3).
        database = self.database
        plain: list[dict[str, Any]] = []
        guarded: list[dict[str, Any]] = []
        for id_ in sorted(execution_rows):
            fence = fences.get(id_)
            if fence is None:
                plain.append(execution_rows[id_])
            else:
                guarded.append({**execution_rows[id_], "b_owner": fence[0], "b_epoch": fence[1]})
        if guarded:
            changed = database.executemany(conn, _UPDATE_FENCED, guarded)
            if changed < 0:
                # The driver cannot count an executemany's rows (asyncpg): read the holders,
                # locked until commit (a stale row was left unchanged by the UPDATE).
                changed = self._count_held(conn, guarded)
            if changed < len(guarded):
                raise LeaseLost("a batch's execution is leased to another replica or epoch")
        if plain:
            changed = database.executemany(conn, _UPDATE_EXECUTION, plain)
            if 0 <= changed < len(plain):
                raise KeyError("a batch updates an execution that does not exist")
        database.executemany(conn, self._upsert_nodes, list(node_rows.values()))
        database.executemany(conn, _INSERT_EVENTS, event_rows)
        if consumed:
            conn.execute(_CONSUME, consumed)
        for signal in signals:  # one by one: each takes the seq after the one before
            conn.execute(_INSERT_SIGNAL, signal)
        if event_rows:
            # Delivered at commit: Watch streams on other replicas read the new events.
            database.notify_in(conn, "events", sorted({row["execution_id"] for row in event_rows}))
        return [batch.result for batch in batches]

    @staticmethod
    def _count_held(conn: sa.Connection, guarded: list[dict[str, Any]]) -> int:
        """How many of the fenced rows are held by their batch's owner and epoch."""
        expected = {row["b_id"]: (row["b_owner"], row["b_epoch"]) for row in guarded}
        held = conn.execute(_CHECK_FENCE, {"ids": sorted(expected)}).all()
        return sum(1 for id_, owner, epoch in held if expected[id_] == (owner, epoch))

    async def _explain(self, batch: _Rows, exc: Exception) -> Exception:
        """Turns a refused batch into the error the memory store raises for the same mistake:
        KeyError for an unknown execution, ValueError for anything else (a duplicate event,
        a payload the database cannot hold such as NaN or \\u0000 in PostgreSQL's JSONB)."""
        if batch.records is not None:
            batch.materialize()
        if batch.create is not None and isinstance(exc, sa.exc.IntegrityError):
            error = ValueError(
                f"execution {batch.create.id} conflicts with a stored one: {exc.orig}"
            )
            error.__cause__ = exc
            return error
        if isinstance(exc, sa.exc.IntegrityError):
            referenced = {r["execution_id"] for r in batch.nodes + batch.events}
            if batch.execution is not None:
                referenced.add(batch.execution["b_id"])
            for execution_id in sorted(referenced):
                try:
                    known = await self.get_execution(execution_id)
                except StoreError as unavailable:
                    return unavailable
                if known is None:
                    return KeyError(f"unknown execution {execution_id}")
        if isinstance(exc, (ValueError, KeyError, LeaseLost)):
            return exc
        if isinstance(exc, sa.exc.IntegrityError):
            error = ValueError(f"batch conflicts with stored rows (duplicate event?): {exc.orig}")
        else:
            error = ValueError(f"batch cannot be stored: {exc!r}")
        error.__cause__ = exc
        return error

    # Event log upkeep ------------------------------------------------------
    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        """Partitions on PostgreSQL, deletes on SQLite: the database's own way."""
        return await self.database.maintain_events(now=now, retention_seconds=retention_seconds)

    # Events ----------------------------------------------------------------
    async def list_events(
        self, execution_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        table = db.events
        query = (
            sa.select(table)
            .where(table.c.execution_id == execution_id, table.c.sequence > after_sequence)
            .order_by(table.c.sequence)
            .limit(limit)
        )
        return [db.event_record(row) for row in await self.database.read(query)]

    # Signals ---------------------------------------------------------------
    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        self.database.require_open()
        params = _signal_params(signal)
        statement = self._add_signal

        def insert(conn: sa.Connection) -> tuple[SignalRecord, bool]:
            seq = (conn.execute(statement, params)).scalar()
            if seq is not None:
                return replace(signal, seq=int(seq)), True
            existing = conn.execute(
                _GET_SIGNAL, {"b_id": signal.execution_id, "b_signal": signal.signal_id}
            )
            return db.signal_record(existing.one()), False

        try:
            return await self.database.retry_unique(insert)
        except sa.exc.IntegrityError:
            if await self.get_execution(signal.execution_id) is None:
                raise KeyError(f"unknown execution {signal.execution_id}") from None
            raise StoreError("could not assign a signal seq: too much contention") from None

    async def pending_signals(self, execution_id: str) -> list[SignalRecord]:
        query = (
            sa.select(db.signals)
            .where(db.signals.c.execution_id == execution_id, db.signals.c.consumed_by.is_(None))
            .order_by(db.signals.c.seq)
        )
        return [db.signal_record(row) for row in await self.database.read(query)]

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        """A read by key (`read_now`: on SQLite on the loop's thread, so signals sent one
        after another reach their run in that order, control.signal reading this first)."""
        rows = await self.database.read_now(
            _GET_SIGNAL, {"b_id": execution_id, "b_signal": signal_id}
        )
        return db.signal_record(rows[0]) if rows else None


_GET_EXECUTION = sa.select(db.executions).where(
    db.executions.c.id == sa.bindparam("b_id", type_=sa.String())
)
_GET_FOLDED = sa.select(*db.FOLDED_EXECUTIONS).where(
    db.executions.c.id == sa.bindparam("b_id", type_=sa.String())
)
_GET_SIGNAL = sa.select(db.signals).where(
    db.signals.c.execution_id == sa.bindparam("b_id", type_=sa.String()),
    db.signals.c.signal_id == sa.bindparam("b_signal", type_=sa.String()),
)


def _execution_changes(record: ExecutionRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _MUTABLE}
    row["state"] = str(record.state)
    row["b_id"] = record.id
    return row


@dataclass(slots=True)
class _Rows:
    """A batch turned into the rows it writes."""

    execution: dict[str, Any] | None
    nodes: list[dict[str, Any]]
    events: list[dict[str, Any]]
    consumed: list[dict[str, Any]]
    fence: tuple[str, int] | None = None
    # Signals stored by the batch (`Batch.signals`): `_INSERT_SIGNAL`'s parameters.
    signals: list[dict[str, Any]] = field(default_factory=list)
    # A new execution to insert first (create_execution rides the group commit too).
    create: ExecutionRecord | None = None
    create_row: dict[str, Any] | None = None
    # What the caller's future gets: (record, created) for a create.
    result: Any = None
    # A create queued as its records (`of_records`): its nodes' and events' records, their
    # rows (and `create_row`'s) made only if the transaction's way takes it (`materialize`).
    records: tuple[Sequence[NodeRecord], Sequence[EventRecord]] | None = None

    def create_key(self) -> tuple[str, str, str]:
        """The order of a group's creates: by their unique keys."""
        assert self.create is not None
        return (self.create.tenant, self.create.request_id or "", self.create.id)

    @classmethod
    def of_records(
        cls, record: ExecutionRecord, nodes: Sequence[NodeRecord], events: Sequence[EventRecord]
    ) -> _Rows:
        """A create as its records, not snapshot: SQLite's turn writer writes them straight
        (sqlite_turns.py `write_turns`), without the eight row dicts a start's rows took on the
        loop's thread. Its caller changes none of them before the create is done (a start's
        run is launched once its commit is). Its rows say only what `covered_batches` reads:
        a create (`create_row` an empty placeholder) with no rows of other executions."""
        return cls(
            execution=None,
            nodes=[],
            events=[],
            consumed=[],
            create=record,
            create_row=_FROM_RECORDS,
            records=(nodes, events),
        )

    def materialize(self) -> None:
        """The rows of a create queued as its records (for the transaction's way)."""
        assert self.records is not None and self.create is not None
        nodes, events = self.records
        self.nodes = [db.node_row(n) for n in nodes]
        self.events = [db.event_row(e) for e in events]
        self.create_row = db.execution_row(self.create)
        self.records = None

    @classmethod
    def of(cls, batch: Batch) -> _Rows:
        return cls(
            execution=_execution_changes(batch.execution) if batch.execution is not None else None,
            nodes=[db.node_row(n) for n in batch.nodes],
            events=[db.event_row(e) for e in batch.events],
            consumed=[
                {"b_execution": e, "b_seq": s, "b_node": n} for e, s, n in batch.consumed_signals
            ],
            fence=batch.fence,
            signals=[_signal_params(signal) for signal in batch.signals],
        )


# `create_row` of a create queued as its records (`_Rows.of_records`): never written as such.
_FROM_RECORDS: dict[str, Any] = {}


def _own(execution_id: str, nodes: Sequence[NodeRecord], events: Sequence[EventRecord]) -> bool:
    """Whether every node and event is of this execution (what a direct write covers)."""
    for node in nodes:
        if node.execution_id != execution_id:
            return False
    for event in events:
        if event.execution_id != execution_id:
            return False
    return True


def _signal_params(signal: SignalRecord) -> dict[str, Any]:
    """A signal's parameters for `_NEXT_SIGNAL` (its seq is the statement's)."""
    return {
        "b_execution_id": signal.execution_id,
        "b_name": signal.name,
        "b_data": signal.data,
        "b_signal_id": signal.signal_id,
        "b_created_at": signal.created_at,
        "b_consumed_by": signal.consumed_by,
    }


# A signal's row, its seq the next of its execution (one more than the highest stored).
_NEXT_SIGNAL = {
    **{c.name: sa.bindparam(f"b_{c.name}", type_=c.type) for c in db.signals.c},
    "seq": sa.select(sa.func.coalesce(sa.func.max(db.signals.c.seq), 0) + 1)
    .where(db.signals.c.execution_id == sa.bindparam("b_execution_id"))
    .scalar_subquery(),
}
# A signal stored by a turn (`Batch.signals`): a used signal id refuses the batch.
_INSERT_SIGNAL = db.signals.insert().values(_NEXT_SIGNAL)

_MUTABLE = RUN_FIELDS
_INSERT_EVENTS = db.events.insert()
_UPDATE_EXECUTION = (
    db.executions.update()
    .where(db.executions.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(name) for name in _MUTABLE})
)

_UPDATE_FENCED = _UPDATE_EXECUTION.where(
    db.executions.c.owner == sa.bindparam("b_owner"),
    db.executions.c.lease_epoch == sa.bindparam("b_epoch"),
)

# Reads each fenced row's holder (where the driver cannot count an executemany's rows); on PostgreSQL it also locks the rows (in id order, as
# renew_leases locks them: no deadlock between the two) until commit, so a claim by another
# replica waits for (or precedes) this batch, never interleaves. SQLite has one writer.
_CHECK_FENCE = (
    sa.select(db.executions.c.id, db.executions.c.owner, db.executions.c.lease_epoch)
    .where(db.executions.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(db.executions.c.id)
    .with_for_update()
)

_CONSUME = (
    db.signals.update()
    .where(
        db.signals.c.execution_id == sa.bindparam("b_execution"),
        db.signals.c.seq == sa.bindparam("b_seq"),
    )
    .values(consumed_by=sa.bindparam("b_node"))
)
