"""Executions in a SQL database: their nodes, events, signals and leases, and the group commit.

`commit` is on the engine's hot path (one per node completion), so it goes through the group
commit (group_commit.py): concurrent batches share one transaction and one fsync, and each
hot statement runs once for all their rows (`SqlDatabase.executemany`: on SQLite straight to
sqlite3). Fencing (a replica that lost an execution's lease writes nothing) is the execution
row's UPDATE itself (`... WHERE owner = :o AND lease_epoch = :e`, its row count checked), the
first statement of the transaction.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import ExecutionRepository, LeaseLost, StoreError
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)
from agentrun.storage.sqldb import SqlDatabase, claim_leases

__all__ = ["SqlExecutions"]

_UNFINISHED = [s.value for s in ExecutionState if not s.terminal]


class SqlExecutions(ExecutionRepository):
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
        self.writer: GroupCommit[_Rows] = database.group_commit(
            self._apply, self._explain, name="agentrun-sql-writer", direct=database.turn_writer()
        )
        # A signal takes the next seq of its execution; a used signal id inserts nothing.
        # Built once, as the upsert: a statement built per signal cost more than its insert.
        self._add_signal = (
            insert(db.signals)
            .values(
                {
                    **{c.name: sa.bindparam(f"b_{c.name}", type_=c.type) for c in db.signals.c},
                    "seq": sa.select(sa.func.coalesce(sa.func.max(db.signals.c.seq), 0) + 1)
                    .where(db.signals.c.execution_id == sa.bindparam("b_execution_id"))
                    .scalar_subquery(),
                }
            )
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
        self.database.require_open()
        row = db.execution_row(record)
        node_rows = [db.node_row(n) for n in nodes]
        event_rows = [db.event_row(e) for e in events]

        # Through the group commit: concurrent starts share one transaction (one fsync).
        rows = _Rows(
            execution=None,
            nodes=node_rows,
            events=event_rows,
            consumed=[],
            create=record,
            create_row=row,
        )
        try:
            created: tuple[ExecutionRecord, bool] = await self.writer.submit(rows)
            return created
        except sa.exc.IntegrityError as exc:
            raise ValueError(
                f"execution {record.id} conflicts with a stored one: {exc.orig}"
            ) from exc

    def _insert_execution(self, conn: sa.Connection, rows: _Rows) -> tuple[ExecutionRecord, bool]:
        """Inserts a new execution; with a request_id already used by the tenant, returns the
        stored one and writes nothing else of this batch (the unique constraint decides)."""
        record, row = rows.create, rows.create_row
        assert record is not None and row is not None
        if record.request_id is None:
            conn.execute(db.executions.insert(), row)
        elif conn.execute(self._insert_once, row).rowcount == 0:
            existing = conn.execute(
                sa.select(db.executions).where(
                    db.executions.c.tenant == record.tenant,
                    db.executions.c.request_id == record.request_id,
                )
            )
            rows.nodes, rows.events = [], []
            return db.execution_record(existing.one()), False
        return copy.copy(record), True

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        rows = await self.database.read_now(_GET_EXECUTION, {"b_id": execution_id})
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
        query = sa.select(db.executions).where(db.executions.c.tenant == tenant)
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
            sa.select(db.executions)
            .where(db.executions.c.state.in_(_UNFINISHED))
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
                executions.c.state.in_(_UNFINISHED),
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

    async def commit(self, batch: Batch) -> None:
        self.database.require_open()
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
        # New executions first: later batches of the same group may write to them. In key
        # order, so that two replicas' groups never wait on each other's unique keys in a cycle.
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

    # Leases ----------------------------------------------------------------
    # An execution is held by its owner while its own `lease_expires_at` (set when it is
    # created or claimed; 0 once handed back) or its owner's row in `replica_leases` (renewed
    # every lease/3, one row per replica) is in the future: renewing costs one row however
    # many executions a replica owns (docs/durability.md, "Leases").
    async def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int = 100,
        include_own: bool = False,
        after_id: str | None = None,
    ) -> list[ExecutionRecord]:
        self.database.require_open()
        t, r = db.executions, db.replica_leases
        # Replicas whose own lease just expired, locked (SKIP LOCKED: one renewing now is
        # alive) until this claim commits, so a renewal waits for it and then finds its row
        # spent. Rows spent already (0) need no lock: their replica renews the old way, every
        # execution's own lease, and those it renews are not expired here.
        dying = (
            sa.select(r.c.id)
            .where(r.c.id != owner, r.c.lease_expires_at < now, r.c.lease_expires_at > 0)
            .with_for_update(skip_locked=True)
        )
        spent = sa.select(r.c.id).where(r.c.lease_expires_at <= 0)

        def claim(conn: sa.Connection) -> list[ExecutionRecord]:
            gone = [row.id for row in conn.execute(dying)]
            x = t.c.lease_expires_at
            expired = sa.or_(
                t.c.owner.is_(None),
                x.is_(None),
                x <= 0,  # handed back
                sa.and_(
                    x < now,
                    sa.or_(
                        t.c.owner.in_(gone),
                        t.c.owner.in_(spent),
                        t.c.owner.not_in(sa.select(r.c.id)),
                    ),
                ),
            )
            # Never this replica's own by expiry: those it runs, and a late renewal must not
            # bump their epoch under its running runs (which would then stop as "lease lost").
            free = sa.and_(expired, sa.or_(t.c.owner.is_(None), t.c.owner != owner))
            if include_own:
                free = sa.or_(free, t.c.owner == owner)
            if after_id is not None:
                free = sa.and_(free, t.c.id > after_id)
            candidates = (
                sa.select(t.c.id)
                .where(t.c.state.in_(_UNFINISHED), free)
                .order_by(t.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = claim_leases(
                conn, t, candidates, owner=owner, now=now, lease_seconds=lease_seconds
            )
            if gone:
                # Spent, whatever their clocks say: a replica that comes back finds out at its
                # next renewal and learns which executions it still holds.
                conn.execute(r.update().where(r.c.id.in_(gone)).values(lease_expires_at=0.0))
            return [db.execution_record(row) for row in rows]

        return await self.database.transaction(claim, leases=True)

    async def renew_leases(
        self, owner: str, *, lease_seconds: float, now: float
    ) -> set[str] | None:
        """One row while this replica's lease held throughout (None: every execution it
        held, it still holds); otherwise (its first renewal, or one after its lease ran out
        and others may have claimed) every execution it owns, as ever, and its row anew."""
        self.database.require_open()
        t, r = db.executions, db.replica_leases
        until = now + lease_seconds
        extend = (
            r.update()
            .where(r.c.id == owner, r.c.lease_expires_at >= now)
            .values(lease_expires_at=until)
        )
        mine = (
            sa.select(t.c.id)
            .where(t.c.owner == owner, t.c.state.in_(_UNFINISHED))
            .order_by(t.c.id)
            .with_for_update()
        )
        insert = self.database.insert(r).values(id=owner, lease_expires_at=until)
        register = insert.on_conflict_do_update(
            index_elements=[r.c.id], set_={"lease_expires_at": until}
        )

        def renew(conn: sa.Connection) -> set[str] | None:
            if conn.execute(extend).rowcount == 1:
                return None
            # Locked in id order first (as fenced commits lock them), then extended.
            ids = [row.id for row in conn.execute(mine)]
            if ids:
                conn.execute(t.update().where(t.c.id.in_(ids)).values(lease_expires_at=until))
            conn.execute(register)
            return set(ids)

        return await self.database.transaction(renew, leases=True)

    async def next_lease_expiry(self, owner: str) -> float | None:
        rows = await self.database.read(_NEXT_EXPIRY, {"b_owner": owner})
        return None if rows[0][0] is None else float(rows[0][0])

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        self.database.require_open()
        t = db.executions
        statement = t.update().where(t.c.owner == owner).values(lease_expires_at=0.0)
        if execution_ids is not None:
            statement = statement.where(t.c.id.in_(list(execution_ids)))
        await self.database.transaction(lambda conn: conn.execute(statement), leases=True)

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
        params = {f"b_{c.name}": getattr(signal, c.name) for c in db.signals.c if c.name != "seq"}
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

    async def restore_reads(
        self, execution_ids: Sequence[str]
    ) -> dict[str, tuple[list[NodeRecord], list[SignalRecord]]]:
        """`Store.restore_reads`: the node rows and unconsumed signals of many executions in
        two queries per chunk of ids (recovery rebuilds hundreds of runs at once)."""
        out: dict[str, tuple[list[NodeRecord], list[SignalRecord]]] = {
            i: ([], []) for i in execution_ids
        }
        ids = list(out)
        for start in range(0, len(ids), _RESTORE_CHUNK):
            chunk = ids[start : start + _RESTORE_CHUNK]
            nodes = (
                sa.select(db.nodes)
                .where(db.nodes.c.execution_id.in_(chunk))
                .order_by(db.nodes.c.execution_id, db.nodes.c.node_id)
            )
            for row in await self.database.read(nodes):
                out[row.execution_id][0].append(db.node_record(row))
            signals = (
                sa.select(db.signals)
                .where(db.signals.c.execution_id.in_(chunk), db.signals.c.consumed_by.is_(None))
                .order_by(db.signals.c.execution_id, db.signals.c.seq)
            )
            for row in await self.database.read(signals):
                out[row.execution_id][1].append(db.signal_record(row))
        return out

    async def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        """`Store.restore_read` in one query (`_RESTORE_ONE`), one snapshot: one round trip on
        PostgreSQL; on SQLite one read on the loop's thread (`read_now`), where three reads
        side by side through aiosqlite cost fifteen thread hand-offs."""
        rows = await self.database.read_now(_RESTORE_ONE, {"b_id": execution_id})
        if not rows or rows[0].kind != 0:
            return None
        record = db.execution_record(_Unprefixed(rows[0], "e_"))
        nodes = [db.node_record(_Unprefixed(r, "n_")) for r in rows if r.kind == 1]
        signals = [db.signal_record(_Unprefixed(r, "s_")) for r in rows if r.kind == 2]
        return record, nodes, signals

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        query = sa.select(db.signals).where(
            db.signals.c.execution_id == execution_id, db.signals.c.signal_id == signal_id
        )
        rows = await self.database.read(query)
        return db.signal_record(rows[0]) if rows else None


# Ids per query of `restore_reads` (well under SQLite's 32,766 bound parameters).
_RESTORE_CHUNK = 500


def _restore_one() -> sa.CompoundSelect[Any]:
    """An execution's row, its node rows and its unconsumed signals as one UNION ALL: each
    row says which it is (`kind` 0, 1, 2) and carries the columns of every table, prefixed
    (`e_`, `n_`, `s_`), NULL (typed, so both dialects decode them alike) where not its own.
    Ordered as `get_nodes` and `pending_signals` order theirs."""
    tables = ((db.executions, "e_"), (db.nodes, "n_"), (db.signals, "s_"))
    wanted = sa.bindparam("b_id", type_=sa.String())
    where = (
        db.executions.c.id == wanted,
        db.nodes.c.execution_id == wanted,
        sa.and_(db.signals.c.execution_id == wanted, db.signals.c.consumed_by.is_(None)),
    )
    branches = []
    for kind, (table, _prefix) in enumerate(tables):
        columns: list[sa.ColumnElement[Any]] = [
            sa.literal_column(str(kind), sa.Integer).label("kind")
        ]
        for other, prefix in tables:
            for column in other.c:
                value = column if other is table else sa.cast(sa.null(), column.type)
                columns.append(value.label(prefix + column.name))
        branches.append(sa.select(*columns).where(where[kind]))
    return sa.union_all(*branches).order_by(
        sa.literal_column("kind"), sa.literal_column("n_node_id"), sa.literal_column("s_seq")
    )


_RESTORE_ONE = _restore_one()


def _next_expiry() -> sa.Select[Any]:
    """When the first lease held by another replica than `b_owner` expires: each unfinished
    execution's own lease or its owner's (`replica_leases`), whichever is later; 0 for one
    with no owner or handed back.

    Read every lease/3 by every replica, so it reads only others' rows: three ranges of
    `ix_executions_state_owner` (no owner, owners before `b_owner`, owners after it), never
    the executions `b_owner` holds itself (idle ones can be most of them) nor finished ones.
    As one `owner != b_owner` filter, SQLite and PostgreSQL read all unfinished rows."""
    t, r = db.executions, db.replica_leases
    x, replica = t.c.lease_expires_at, r.c.lease_expires_at
    owner = sa.bindparam("b_owner", type_=sa.String())
    held = sa.case(
        (sa.or_(t.c.owner.is_(None), x.is_(None), x <= 0), 0.0),
        (sa.or_(replica.is_(None), x >= replica), x),
        else_=replica,
    ).label("held")
    ranges = (t.c.owner.is_(None), t.c.owner < owner, t.c.owner > owner)
    others = sa.union_all(
        *(
            sa.select(held)
            .select_from(t.outerjoin(r, r.c.id == t.c.owner))
            .where(t.c.state.in_(_UNFINISHED), where)
            for where in ranges
        )
    ).subquery()
    return sa.select(sa.func.min(others.c.held))


_NEXT_EXPIRY = _next_expiry()
_GET_EXECUTION = sa.select(db.executions).where(
    db.executions.c.id == sa.bindparam("b_id", type_=sa.String())
)
_GET_SIGNAL = sa.select(db.signals).where(
    db.signals.c.execution_id == sa.bindparam("b_id", type_=sa.String()),
    db.signals.c.signal_id == sa.bindparam("b_signal", type_=sa.String()),
)


def _positions(prefix: str) -> tuple[tuple[str, ...], operator.itemgetter[Any]]:
    """The column names of one table in `_RESTORE_ONE`'s rows, and where they are."""
    labels = list(_RESTORE_ONE.selected_columns.keys())
    names = tuple(label[len(prefix) :] for label in labels if label.startswith(prefix))
    return names, operator.itemgetter(*(labels.index(prefix + name) for name in names))


_COLUMNS = {prefix: _positions(prefix) for prefix in ("e_", "n_", "s_")}


class _Unprefixed:
    """A row of `_RESTORE_ONE` as one table's row (what the record mappers read)."""

    __slots__ = ("_mapping",)

    def __init__(self, row: sa.Row[Any], prefix: str) -> None:
        names, values = _COLUMNS[prefix]
        self._mapping = dict(zip(names, values(row), strict=True))


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
    # A new execution to insert first (create_execution rides the group commit too).
    create: ExecutionRecord | None = None
    create_row: dict[str, Any] | None = None
    # What the caller's future gets: (record, created) for a create.
    result: Any = None

    def create_key(self) -> tuple[str, str, str]:
        """The order of a group's creates: by their unique keys."""
        assert self.create is not None
        return (self.create.tenant, self.create.request_id or "", self.create.id)

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
        )


_MUTABLE = (
    "state",
    "output",
    "error",
    "vars",
    "started_at",
    "ended_at",
    "deadline",
    "last_sequence",
    "labels",
    "usage",
)
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
