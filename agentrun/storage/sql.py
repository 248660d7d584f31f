"""The SQL store: SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg) through SQLAlchemy Core.

`commit` is on the engine's hot path (one per node completion), so it is a group commit: the
callers enqueue their batches and one writer task writes everything pending in one transaction,
paying for one fsync (SQLite) or one WAL flush (PostgreSQL) per group instead of per batch.
If that combined transaction fails on a constraint, each batch is retried alone so that one
bad batch does not fail its innocent neighbours; a connection failure fails them all.

SQLite allows one writer at a time, so every write goes through one long-lived connection
that starts its transactions with `BEGIN IMMEDIATE` (no lock upgrades, no SQLITE_BUSY half way
through); reads use a small pool of separate connections, which WAL lets run alongside.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import re
import json
import sqlite3
import time
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage.base import LeaseLost, Store, StoreError
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    SignalRecord,
    WorkflowRecord,
)

__all__ = ["SqlStore"]

T = TypeVar("T")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# Bounds one group's transaction so a burst cannot make a single commit arbitrarily slow.
_MAX_GROUP = 512
# Concurrent writers on PostgreSQL may race for the same new version / signal seq.
_UNIQUE_RETRIES = 20
_UNFINISHED = [s.value for s in ExecutionState if not s.terminal]


class SqlStore(Store):
    """A `Store` on SQLite or PostgreSQL.

    `synchronous` is SQLite's PRAGMA: FULL (the default) makes every returned `commit` survive
    power loss; NORMAL is faster in WAL mode but may lose the last commits on power loss (never
    on a process crash) — choose it only when a re-run of the last steps is acceptable.
    A `commit` whose caller is cancelled may still be written: its batch is already queued.

    Errors, as the memory store raises them: StoreError when the database is unavailable
    (retry later), KeyError for a batch or signal naming an unknown execution, ValueError for
    anything the database refuses (a duplicate event sequence or execution id, a value JSON
    cannot hold, U+0000 or NaN in PostgreSQL's JSONB).
    """

    # How long a SQLite write waits for another process's write lock before StoreError.
    busy_timeout_ms = 10_000

    def __init__(self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None) -> None:
        self._url = sa.make_url(url)
        backend = self._url.get_backend_name()
        if self._url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"unsupported database URL {self._url.drivername!r}: "
                "use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
            )
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        self._synchronous = synchronous.upper()
        # PostgreSQL ends a session idle inside a transaction this long: a frozen replica must
        # not keep row locks that hide its executions from claims. Up to the lease, that still
        # frees them within lease + lease/3 of the freeze; shorter, it would also end the
        # sessions of a live replica whose loop stalled for a few seconds on a busy machine.
        self._idle_in_transaction_ms = max(IDLE_IN_TRANSACTION_MS, int((lease_seconds or 0) * 1000))
        self._sqlite = backend == "sqlite"
        if self._sqlite and self._url.database in (None, "", ":memory:"):
            raise ValueError("SqlStore needs a SQLite file; use the 'memory' store for RAM")
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        # Built once: constructing an upsert costs more than executing it on the hot path.
        self._upserts = {t.name: self._upsert(t) for t in (db.executions, db.nodes)}
        # An idempotent start: a used (tenant, request_id) inserts nothing.
        self._insert_once = self._insert(db.executions).on_conflict_do_nothing(
            index_elements=[db.executions.c.tenant, db.executions.c.request_id]
        )
        self._engine: AsyncEngine | None = None
        self._lease_engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        # SQLite: every write runs on one thread with a plain sqlite3 connection, so a group
        # commit costs one hand-off between threads instead of one per statement.
        self._sync_writer: sa.Engine | None = None
        self._sync_conn: sa.Connection | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[tuple[_Rows, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        # Number of group transactions written; tests use it to see that grouping happens.
        self._groups = 0
        # PostgreSQL LISTEN/NOTIFY: replicas wake each other (signals, Watch streams).
        self._listeners: list[Callable[[str, str], None]] = []
        self._listen_task: asyncio.Task[None] | None = None

    @property
    def dialect(self) -> str:
        return "sqlite" if self._sqlite else "postgresql"

    # Lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        if self._engine is not None:
            return
        self._closing = False
        # Fresh per open: asyncio primitives belong to the loop that first uses them.
        self._wake = asyncio.Event()
        if self._sqlite:
            folder = Path(self._url.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database folder {folder}: {exc}") from exc
            self._engine = self._reader = self._sqlite_engine()
            self._sync_writer = self._sqlite_writer()
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agentrun-sqlite-writer")
        else:
            options: dict[str, Any] = dict(
                # asyncpg waits 60 s for a connection by default; fail over sooner. A replica
                # frozen inside a transaction (SIGSTOP, a VM pause) must not keep its row locks,
                # which would hide its executions from the other replicas' claims.
                connect_args={
                    "timeout": 10,
                    "server_settings": {"idle_in_transaction_session_timeout": str(self._idle_in_transaction_ms)},
                },
                json_serializer=db.jsonb_dumps,
            )
            # 28 + 2 for leases + 1 LISTEN: 31 connections at most per replica, as documented.
            self._engine = create_async_engine(self._url, pool_size=10, max_overflow=18, **options)
            # Lease renewals and claims on connections of their own: a burst of reads and
            # commits that holds every pooled connection must not make a live replica's
            # renewal wait until its leases expired.
            self._lease_engine = create_async_engine(self._url, pool_size=1, max_overflow=1, **options)
            # Single-statement reads need no BEGIN/ROLLBACK round trips.
            self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not await self._schema_current():
                await self._transaction(_migrate)
        except BaseException:
            await self._dispose()
            raise
        self._writer_task = asyncio.create_task(self._run_writer(), name="agentrun-sql-writer")
        if self._listeners:
            self._start_listener()

    async def _schema_current(self) -> bool:
        """Whether the database is at the migrations' head, read outside any transaction:
        a replica restarting on a busy machine then never sits inside a transaction while
        alembic loads its scripts (PostgreSQL ended such sessions as idle in transaction)."""
        try:
            rows = await self._read(sa.text("SELECT version_num FROM alembic_version"))
        except Exception:  # noqa: BLE001 - a new database, or one away: the migration says which
            return False
        return {row[0] for row in rows} == {_migration_head()}

    async def close(self) -> None:
        if self._engine is None:
            return
        self._closing = True
        self._wake.set()
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(BaseException):
                await self._listen_task
            self._listen_task = None
        task, self._writer_task = self._writer_task, None
        if task is not None:
            # Drains the queue; a writer that already died (cancelled, failed) raises nothing.
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()
        await self._dispose()

    async def _dispose(self) -> None:
        if self._thread is not None:
            writer, thread = self._sync_writer, self._thread
            conn, self._sync_conn = self._sync_conn, None

            def dispose() -> None:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                if writer is not None:
                    writer.dispose()

            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(thread, dispose)
            thread.shutdown(wait=False)
            self._thread = self._sync_writer = None
        # On PostgreSQL the reader is a view of the same engine and pool.
        if self._engine is not None:
            await self._engine.dispose()
        if self._lease_engine is not None:
            await self._lease_engine.dispose()
        self._engine = self._reader = self._lease_engine = None

    def _sqlite_pragmas(self, engine: Any, *, writer: bool) -> None:
        synchronous = self._synchronous
        busy_ms = self.busy_timeout_ms

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide where transactions start.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={synchronous}",
                "foreign_keys=ON",
                f"busy_timeout={busy_ms}",
                *(() if writer else ("query_only=ON",)),
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        if writer:

            @sa_event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _sqlite_engine(self) -> AsyncEngine:
        """Read connections (aiosqlite); WAL lets them run beside the writer."""
        engine = create_async_engine(self._url, pool_size=4, max_overflow=4)
        self._sqlite_pragmas(engine.sync_engine, writer=False)
        return engine

    def _sqlite_writer(self) -> sa.Engine:
        """The one write connection (sqlite3), used only from the writer thread."""
        url = self._url.set(drivername="sqlite")
        engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
        self._sqlite_pragmas(engine, writer=True)
        return engine

    # Plumbing --------------------------------------------------------------
    def _require_open(self) -> AsyncEngine:
        if self._engine is None or self._closing:
            raise StoreError("the store is not open")
        return self._engine

    async def _transaction(self, work: Callable[[sa.Connection], T], *, leases: bool = False) -> T:
        """Runs `work` (plain, synchronous SQLAlchemy Core) in one write transaction: on
        SQLite in the writer thread, on PostgreSQL through asyncpg (`leases`: on the lease
        pool); constraint violations pass through raw."""
        engine = self._engine
        if leases and self._lease_engine is not None and engine is not None:
            engine = self._lease_engine
        if engine is None:
            raise StoreError("the store is not open")
        with _store_errors():
            if not self._sqlite:
                for attempt in range(3):
                    try:
                        async with engine.begin() as conn:
                            return await conn.run_sync(work)
                    except sa.exc.DBAPIError as exc:
                        # A deadlock or serialization failure rolled everything back: again.
                        code = getattr(exc.orig, "sqlstate", None)
                        if code not in ("40P01", "40001") or attempt == 2:
                            raise
            writer, thread = self._sync_writer, self._thread
            assert writer is not None and thread is not None

            def in_thread() -> T:
                # One connection, kept for the store's life: no pool checkout or reset per
                # transaction. Dropped after a failure, so the next one starts clean.
                conn = self._sync_conn
                if conn is None or conn.closed or conn.invalidated:
                    conn = self._sync_conn = writer.connect()
                try:
                    with conn.begin():
                        return work(conn)
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.close()
                    self._sync_conn = None
                    raise

            return await asyncio.get_running_loop().run_in_executor(thread, in_thread)

    async def _read(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        reader = self._reader
        if reader is None or self._closing:
            raise StoreError("the store is not open")
        with _store_errors():
            async with reader.connect() as conn:
                return list((await conn.execute(statement)).all())

    # Workflows -------------------------------------------------------------
    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        self._require_open()

        def insert(conn: sa.Connection) -> int:
            latest = conn.scalar(
                sa.select(sa.func.coalesce(sa.func.max(db.workflows.c.version), 0)).where(
                    db.workflows.c.tenant == record.tenant, db.workflows.c.name == record.name
                )
            )
            version = int(latest) + 1
            conn.execute(
                db.workflows.insert().values(
                    tenant=record.tenant,
                    name=record.name,
                    version=version,
                    spec=record.spec,
                    description=record.description or "",
                    created_at=record.created_at,
                )
            )
            return version

        try:
            version = await self._retry_unique(insert)
        except sa.exc.IntegrityError:
            raise StoreError("could not assign a version: too much contention") from None
        return replace(record, version=version)

    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        query = sa.select(db.workflows).where(
            db.workflows.c.tenant == tenant, db.workflows.c.name == name
        )
        if not include_deleted:
            query = query.where(db.workflows.c.deleted_at.is_(None))
        if version is None:
            query = query.order_by(db.workflows.c.version.desc()).limit(1)
        else:
            query = query.where(db.workflows.c.version == version)
        rows = await self._read(query)
        return db.workflow_record(rows[0]) if rows else None

    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        latest = sa.select(
            db.workflows.c.name, sa.func.max(db.workflows.c.version).label("version")
        ).where(db.workflows.c.tenant == tenant, db.workflows.c.deleted_at.is_(None))
        if after_name is not None:
            latest = latest.where(db.workflows.c.name > after_name)
        latest = latest.group_by(db.workflows.c.name).order_by(db.workflows.c.name).limit(limit)
        sub = latest.subquery()
        query = (
            sa.select(db.workflows)
            .join(
                sub,
                sa.and_(
                    db.workflows.c.tenant == tenant,
                    db.workflows.c.name == sub.c.name,
                    db.workflows.c.version == sub.c.version,
                ),
            )
            .order_by(db.workflows.c.name)
        )
        return [db.workflow_record(row) for row in await self._read(query)]

    async def delete_workflow(self, tenant: str, name: str) -> bool:
        self._require_open()

        def delete(conn: sa.Connection) -> bool:
            # Soft: executions running a deleted workflow still find their version, and
            # version numbers keep growing if the name is used again.
            result = conn.execute(
                db.workflows.update()
                .where(
                    db.workflows.c.tenant == tenant,
                    db.workflows.c.name == name,
                    db.workflows.c.deleted_at.is_(None),
                )
                .values(deleted_at=time.time())
            )
            return result.rowcount > 0

        return await self._transaction(delete)

    # Executions ------------------------------------------------------------
    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        self._require_open()
        row = db.execution_row(record)
        node_rows = [db.node_row(n) for n in nodes]
        event_rows = [db.event_row(e) for e in events]

        # Through the group commit: concurrent starts share one transaction (one fsync).
        rows = _Rows(
            execution=None, nodes=node_rows, events=event_rows, consumed=[], create=record, create_row=row
        )
        if self._writer_task is None or self._writer_task.done():
            raise StoreError("the store's writer has stopped")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        self._wake.set()
        try:
            return await future
        except sa.exc.IntegrityError as exc:
            raise ValueError(f"execution {record.id} conflicts with a stored one: {exc.orig}") from exc

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
        rows = await self._read(sa.select(db.executions).where(db.executions.c.id == execution_id))
        return db.execution_record(rows[0]) if rows else None

    async def list_executions(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
    ) -> list[ExecutionRecord]:
        query = sa.select(db.executions).where(db.executions.c.tenant == tenant)
        if after_id is not None:
            query = query.where(db.executions.c.id > after_id)
        if workflow is not None:
            query = query.where(db.executions.c.workflow == workflow)
        if states:
            query = query.where(db.executions.c.state.in_([str(s) for s in states]))
        query = query.order_by(db.executions.c.id).limit(limit)
        return [db.execution_record(row) for row in await self._read(query)]

    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        query = (
            sa.select(db.executions)
            .where(db.executions.c.state.in_(_UNFINISHED))
            .order_by(db.executions.c.id)
        )
        return [db.execution_record(row) for row in await self._read(query)]

    async def get_nodes(self, execution_id: str) -> list[NodeRecord]:
        """Ordered by node id (SQL has no insertion order to offer)."""
        query = (
            sa.select(db.nodes)
            .where(db.nodes.c.execution_id == execution_id)
            .order_by(db.nodes.c.node_id)
        )
        return [db.node_record(row) for row in await self._read(query)]

    async def commit(self, batch: Batch) -> None:
        self._require_open()
        if self._writer_task is None or self._writer_task.done():
            raise StoreError("the store's writer has stopped")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Snapshot now: the caller may change its records (not payloads) once we return.
        self._pending.append((_Rows.of(batch), future))
        self._wake.set()
        await future

    # Group commit ----------------------------------------------------------
    async def _run_writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    group = self._pending[:_MAX_GROUP]
                    del self._pending[:_MAX_GROUP]
                    await self._write_group(group)
                if self._closing:
                    return
        finally:
            # Whatever stopped the writer (cancellation at loop shutdown, a bug), nobody may
            # be left waiting on a commit that will never be written.
            pending, self._pending = self._pending, []
            _settle(pending, StoreError("the store's writer stopped before this commit"))

    async def _write_group(self, group: list[tuple[_Rows, asyncio.Future[None]]]) -> None:
        error: BaseException
        try:
            await self._transaction(lambda conn: self._apply(conn, [b for b, _ in group]))
        except StoreError as exc:  # the database is unavailable: no batch can succeed
            error = exc
        except asyncio.CancelledError:
            _settle(group, StoreError("the store was closed during commit"))
            raise
        except Exception as exc:  # noqa: BLE001 - a refused batch: find it, spare the others
            if len(group) > 1:
                for item in group:
                    await self._write_group([item])
                return
            error = await self._explain(group[0][0], exc)
        else:
            self._groups += 1
            _settle(group, None)
            return
        _settle(group, error)

    def _apply(self, conn: sa.Connection, batches: Sequence[_Rows]) -> None:
        # Later batches win, exactly as if the upserts had run one after another; dedup also
        # keeps PostgreSQL from seeing one key twice in a statement.
        execution_rows: dict[str, dict[str, Any]] = {}
        node_rows: dict[tuple[str, str], dict[str, Any]] = {}
        event_rows: list[dict[str, Any]] = []
        consumed: list[dict[str, Any]] = []
        # New executions first: later batches of the same group may write to them. In key
        # order, so that two replicas' groups never wait on each other's unique keys in a cycle.
        creates = sorted(
            (b for b in batches if b.create is not None),
            key=lambda b: (b.create.tenant, b.create.request_id or "", b.create.id),
        )
        for batch in creates:
            batch.result = self._insert_execution(conn, batch)
        fenced: dict[str, dict[str, Any]] = {}
        for batch in batches:
            if batch.execution is not None:
                execution_rows[batch.execution["b_id"]] = batch.execution
                if batch.fence is not None:
                    fenced[batch.execution["b_id"]] = {
                        "b_id": batch.execution["b_id"], "b_owner": batch.fence[0], "b_epoch": batch.fence[1],
                    }
            for row in batch.nodes:
                node_rows[(row["execution_id"], row["node_id"])] = row
            event_rows += batch.events
            consumed += batch.consumed
        if fenced:
            # Fencing first: a replica that lost the lease must not write anything. Rows are
            # locked in id order, as renew_leases locks them: no deadlock between the two.
            owned = conn.execute(_CHECK_FENCE, [fenced[k] for k in sorted(fenced)]).rowcount
            if 0 <= owned < len(fenced):
                raise LeaseLost("a batch's execution is leased to another replica or epoch")
        if self._sqlite:
            # The hot statements go straight to sqlite3's executemany: SQLAlchemy's per-row
            # parameter processing cost more than the disk on a busy group commit.
            _FAST.write(conn, list(execution_rows.values()), list(node_rows.values()), event_rows)
        else:
            if execution_rows:
                # The row exists (create_execution made it); only what a run changes is
                # written, so a large input is not rewritten at every step.
                result = conn.execute(_UPDATE_EXECUTION, list(execution_rows.values()))
                if 0 <= result.rowcount < len(execution_rows):
                    raise KeyError("a batch updates an execution that does not exist")
            if node_rows:
                conn.execute(self._upserts["nodes"], list(node_rows.values()))
            if event_rows:
                conn.execute(db.events.insert(), event_rows)
        if consumed:
            conn.execute(_CONSUME, consumed)
        if not self._sqlite and event_rows:
            # Delivered at commit: Watch streams on other replicas read the new events.
            ids = sorted({row["execution_id"] for row in event_rows})
            for chunk in _chunks(ids, 7000):
                conn.execute(sa.select(sa.func.pg_notify(_CHANNEL, "events:" + chunk)))

    def _upsert(self, table: sa.Table) -> sa.Executable:
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={c.name: statement.excluded[c.name] for c in table.c if not c.primary_key},
        )

    async def _explain(self, batch: _Rows, exc: Exception) -> Exception:
        """Turns a refused batch into the error the memory store raises for the same mistake:
        KeyError for an unknown execution, ValueError for anything else (a duplicate event,
        a payload the database cannot hold such as NaN or \\u0000 in PostgreSQL's JSONB)."""
        if batch.create is not None and isinstance(exc, sa.exc.IntegrityError):
            error = ValueError(f"execution {batch.create.id} conflicts with a stored one: {exc.orig}")
            error.__cause__ = exc
            return error
        if isinstance(exc, sa.exc.IntegrityError):
            referenced = {r["execution_id"] for r in batch.nodes + batch.events}
            if batch.execution is not None:
                referenced.add(batch.execution["b_id"])
            for execution_id in sorted(referenced):
                try:
                    known = await self.get_execution(execution_id)
                except StoreError as error:
                    return error
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
        self._require_open()
        if self._sqlite:
            if retention_seconds is None:
                return 0
            t, e = db.executions, db.events
            old = sa.select(t.c.id).where(
                t.c.state.in_([s.value for s in ExecutionState if s.terminal]),
                t.c.ended_at < now - retention_seconds,
            )
            return await self._transaction(
                lambda conn: conn.execute(e.delete().where(e.c.execution_id.in_(old))).rowcount
            )
        return await self._transaction(lambda conn: _maintain_partitions(conn, now, retention_seconds))

    # Cross-replica wake-ups ------------------------------------------------
    async def notify(self, kind: str, execution_id: str) -> None:
        if self._sqlite:
            return
        payload = f"{kind}:{execution_id}"
        await self._transaction(lambda conn: conn.execute(sa.select(sa.func.pg_notify(_CHANNEL, payload))))

    def listen(self, callback: Callable[[str, str], None]) -> None:
        self._listeners.append(callback)
        if self._engine is not None and self._listen_task is None:
            self._start_listener()

    def _start_listener(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sqlite:
            self._listen_task = loop.create_task(self._poll_loop(), name="agentrun-sqlite-poll")
        else:
            self._listen_task = loop.create_task(self._listen_loop(), name="agentrun-pg-listen")

    async def _poll_loop(self) -> None:
        """SQLite has no NOTIFY, yet several processes may share one file (`agentrun run`
        beside `agentrun serve`). New rows are found by rowid every SQLITE_POLL_SECONDS and
        announced as PostgreSQL's notifications would be: `signal` (a signal or control
        request for an execution, which its owner applies) and `events` (Watch streams re-read
        the store). This process's own writes are announced too; listeners ignore repeats."""
        rowid = sa.literal_column("rowid")
        marks = {"events": 0, "signal": 0}
        tables = {"events": db.events, "signal": db.signals}
        started = False
        while not self._closing:
            try:
                if not started:
                    for kind, table in tables.items():
                        rows = await self._read(sa.select(sa.func.coalesce(sa.func.max(rowid), 0)).select_from(table))
                        marks[kind] = int(rows[0][0])
                    started = True
                await asyncio.sleep(SQLITE_POLL_SECONDS)
                for kind, table in tables.items():
                    rows = await self._read(
                        sa.select(table.c.execution_id, sa.func.max(rowid))
                        .where(rowid > marks[kind])
                        .group_by(table.c.execution_id)
                    )
                    for execution_id, mark in rows:
                        marks[kind] = max(marks[kind], int(mark))
                        self._dispatch_notification(None, 0, _CHANNEL, f"{kind}:{execution_id}")
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the file is busy or away; look again later
                await asyncio.sleep(SQLITE_POLL_SECONDS)

    async def _listen_loop(self) -> None:
        """One dedicated asyncpg connection LISTENs; it reconnects after the database comes
        back (meanwhile Watch streams and signals fall back on their periodic checks)."""
        import asyncpg

        dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.2
        while not self._closing:
            conn = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(_CHANNEL, self._dispatch_notification)
                delay = 0.2
                while not self._closing and not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database is away; try again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)

    def _dispatch_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, ids = payload.partition(":")
        for execution_id in ids.split(","):
            for callback in self._listeners:
                try:
                    callback(kind, execution_id)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the others
                    continue

    # Leases ----------------------------------------------------------------
    async def claim_executions(
        self, owner: str, *, lease_seconds: float, now: float, limit: int = 100, include_own: bool = False
    ) -> list[ExecutionRecord]:
        self._require_open()
        t = db.executions
        expired = sa.or_(t.c.owner.is_(None), t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now)
        # Never this replica's own by expiry: those it runs, and a late renewal must not bump
        # their epoch under its running runs (which would then stop as "lease lost").
        free = sa.and_(expired, sa.or_(t.c.owner.is_(None), t.c.owner != owner))
        if include_own:
            free = sa.or_(free, t.c.owner == owner)
        candidates = (
            sa.select(t.c.id)
            .where(t.c.state.in_(_UNFINISHED), free)
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        def claim(conn: sa.Connection) -> list[ExecutionRecord]:
            ids = [row.id for row in conn.execute(candidates)]
            if not ids:
                return []
            conn.execute(
                t.update()
                .where(t.c.id.in_(ids))
                .values(owner=owner, lease_epoch=t.c.lease_epoch + 1, lease_expires_at=now + lease_seconds)
            )
            rows = conn.execute(sa.select(t).where(t.c.id.in_(ids)).order_by(t.c.id))
            return [db.execution_record(row) for row in rows]

        return await self._transaction(claim, leases=True)

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        self._require_open()
        t = db.executions

        mine = (
            sa.select(t.c.id)
            .where(t.c.owner == owner, t.c.state.in_(_UNFINISHED))
            .order_by(t.c.id)
            .with_for_update()
        )

        def renew(conn: sa.Connection) -> set[str]:
            # Locked in id order first (as fenced commits lock them), then extended.
            ids = [row.id for row in conn.execute(mine)]
            if not ids:
                return set()
            conn.execute(t.update().where(t.c.id.in_(ids)).values(lease_expires_at=now + lease_seconds))
            return set(ids)

        return await self._transaction(renew, leases=True)

    async def next_lease_expiry(self, owner: str) -> float | None:
        t = db.executions
        held = sa.case((t.c.owner.is_(None), 0.0), else_=sa.func.coalesce(t.c.lease_expires_at, 0.0))
        query = sa.select(sa.func.min(held)).where(
            t.c.state.in_(_UNFINISHED), sa.or_(t.c.owner.is_(None), t.c.owner != owner)
        )
        rows = await self._read(query)
        return None if rows[0][0] is None else float(rows[0][0])

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        self._require_open()
        t = db.executions
        statement = t.update().where(t.c.owner == owner).values(lease_expires_at=0.0)
        if execution_ids is not None:
            statement = statement.where(t.c.id.in_(list(execution_ids)))
        await self._transaction(lambda conn: conn.execute(statement), leases=True)

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
        return [db.event_record(row) for row in await self._read(query)]

    # Signals ---------------------------------------------------------------
    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        self._require_open()
        next_seq = (
            sa.select(sa.func.coalesce(sa.func.max(db.signals.c.seq), 0) + 1)
            .where(db.signals.c.execution_id == signal.execution_id)
            .scalar_subquery()
        )
        statement = (
            self._insert(db.signals)
            .values(
                execution_id=signal.execution_id,
                seq=next_seq,
                name=signal.name,
                data=signal.data,
                signal_id=signal.signal_id,
                created_at=signal.created_at,
                consumed_by=signal.consumed_by,
            )
            .on_conflict_do_nothing(
                index_elements=[db.signals.c.execution_id, db.signals.c.signal_id]
            )
            .returning(db.signals.c.seq)
        )

        def insert(conn: sa.Connection) -> tuple[SignalRecord, bool]:
            seq = (conn.execute(statement)).scalar()
            if seq is not None:
                return replace(signal, seq=int(seq)), True
            existing = conn.execute(
                sa.select(db.signals).where(
                    db.signals.c.execution_id == signal.execution_id,
                    db.signals.c.signal_id == signal.signal_id,
                )
            )
            return db.signal_record(existing.one()), False

        try:
            return await self._retry_unique(insert)
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
        return [db.signal_record(row) for row in await self._read(query)]

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        query = sa.select(db.signals).where(
            db.signals.c.execution_id == execution_id, db.signals.c.signal_id == signal_id
        )
        rows = await self._read(query)
        return db.signal_record(rows[0]) if rows else None

    async def _retry_unique(self, work: Callable[[sa.Connection], T]) -> T:
        """Retries a read-then-insert that lost a race to a concurrent writer (PostgreSQL)."""
        for attempt in range(_UNIQUE_RETRIES):
            try:
                return await self._transaction(work)
            except sa.exc.IntegrityError:
                if self._sqlite or attempt == _UNIQUE_RETRIES - 1:
                    raise  # SQLite writes are serialised: a violation is not a race.
                await asyncio.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")


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


_CHANNEL = "agentrun"
# How often a SQLite store looks for rows other processes wrote (signals, events).
SQLITE_POLL_SECONDS = 0.2
# Our transactions are short; one idle this long belongs to a frozen or lost process (the
# floor: a store that knows its lease waits that long).
IDLE_IN_TRANSACTION_MS = 5_000


def _chunks(ids: list[str], size: int) -> Iterator[str]:
    """Comma-joined ids in payloads under PostgreSQL's 8000-byte NOTIFY limit."""
    current: list[str] = []
    length = 0
    for execution_id in ids:
        if current and length + len(execution_id) + 1 > size:
            yield ",".join(current)
            current, length = [], 0
        current.append(execution_id)
        length += len(execution_id) + 1
    if current:
        yield ",".join(current)


_MUTABLE = (
    "state", "output", "error", "vars", "started_at", "ended_at", "deadline", "last_sequence", "labels", "usage",
)
_UPDATE_EXECUTION = (
    db.executions.update()
    .where(db.executions.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(name) for name in _MUTABLE})
)

class _SqliteWriter:
    """The group commit's three statements as plain sqlite3 executemany calls, parameters
    encoded here (JSON columns as json.dumps text, NULL for None, as SQLAlchemy's JSON type
    stores them), so reads through SQLAlchemy see exactly the same rows."""

    def __init__(self) -> None:
        def names(table: sa.Table) -> list[str]:
            return [c.name for c in table.c]

        def is_json(column: sa.Column[Any]) -> bool:
            return isinstance(column.type, sa.JSON) or isinstance(
                getattr(column.type, "impl", None), sa.JSON
            )

        self.node_cols = names(db.nodes)
        self.node_json = {c.name for c in db.nodes.c if is_json(c)}
        self.event_cols = names(db.events)
        self.event_json = {c.name for c in db.events.c if is_json(c)}
        self.exec_json = {c.name for c in db.executions.c if is_json(c) and c.name in _MUTABLE}
        keys = [c.name for c in db.nodes.primary_key.columns]
        self.node_sql = (
            f"INSERT INTO nodes ({', '.join(self.node_cols)}) VALUES ({', '.join('?' * len(self.node_cols))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in self.node_cols if c not in keys)
        )
        self.event_sql = (
            f"INSERT INTO events ({', '.join(self.event_cols)}) VALUES ({', '.join('?' * len(self.event_cols))})"
        )
        self.exec_sql = f"UPDATE executions SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE id = ?"

    @staticmethod
    def _params(row: dict[str, Any], cols: Sequence[str], json_cols: set[str]) -> tuple[Any, ...]:
        dumps = json.dumps
        return tuple(
            (None if row[c] is None else dumps(row[c])) if c in json_cols else row[c] for c in cols
        )

    def write(
        self,
        conn: sa.Connection,
        executions: list[dict[str, Any]],
        nodes: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> None:
        cursor = conn.connection.driver_connection.cursor()
        try:
            if executions:
                params = [self._params(r, _MUTABLE, self.exec_json) + (r["b_id"],) for r in executions]
                cursor.executemany(self.exec_sql, params)
                if cursor.rowcount < len(executions):
                    raise KeyError("a batch updates an execution that does not exist")
            if nodes:
                cursor.executemany(self.node_sql, [self._params(r, self.node_cols, self.node_json) for r in nodes])
            if events:
                cursor.executemany(
                    self.event_sql, [self._params(r, self.event_cols, self.event_json) for r in events]
                )
        except sqlite3.IntegrityError as exc:
            raise sa.exc.IntegrityError(self.event_sql, None, exc) from exc
        finally:
            cursor.close()


# Touches the row only where the fence holds; on PostgreSQL it also locks it until commit,
# so a claim by another replica waits for (or precedes) this batch, never interleaves.
_CHECK_FENCE = (
    db.executions.update()
    .where(
        db.executions.c.id == sa.bindparam("b_id"),
        db.executions.c.owner == sa.bindparam("b_owner"),
        db.executions.c.lease_epoch == sa.bindparam("b_epoch"),
    )
    .values(lease_epoch=db.executions.c.lease_epoch)
)

_FAST = _SqliteWriter()

_CONSUME = (
    db.signals.update()
    .where(
        db.signals.c.execution_id == sa.bindparam("b_execution"),
        db.signals.c.seq == sa.bindparam("b_seq"),
    )
    .values(consumed_by=sa.bindparam("b_node"))
)


@functools.cache
def _migration_head() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return ScriptDirectory.from_config(config).get_current_head()


def _migrate(conn: sa.Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


_DAY = 86_400
_PARTITION = re.compile(r"^events_d(\d{8})$")


def _day_bounds(day: datetime.date) -> tuple[str, str]:
    """The execution-id range of executions created that day (UTC): ids start with the
    creation time in milliseconds as 12 hex digits."""
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()
    return f"{int(start * 1000):012x}", f"{int((start + _DAY) * 1000):012x}"


def _maintain_partitions(conn: sa.Connection, now: float, retention_seconds: float | None) -> int:
    """Creates the daily partitions of `events` for yesterday to two days ahead, and drops
    those older than the retention whose executions have all ended."""
    # One maintainer at a time across replicas; the others skip this round.
    if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(7415001)")).scalar():
        return 0
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    existing = {
        row[0]
        for row in conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
            )
        )
    }
    for offset in (-1, 0, 1, 2):
        day = today + datetime.timedelta(days=offset)
        name = f"events_d{day:%Y%m%d}"
        if name in existing:
            continue
        low, high = _day_bounds(day)
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.text(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{low}') TO ('{high}')")
                )
        except sa.exc.DBAPIError:
            # Rows of that day already sit in the default partition (the table was just
            # partitioned): they stay there, the day goes without a partition of its own.
            continue
    if retention_seconds is None:
        return 0
    dropped = 0
    unfinished = [s.value for s in ExecutionState if not s.terminal]
    for name in sorted(existing):
        match = _PARTITION.match(name)
        if match is None:
            continue
        day = datetime.datetime.strptime(match.group(1), "%Y%m%d").date()
        low, high = _day_bounds(day)
        end = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp() + _DAY
        if end > now - retention_seconds:
            continue
        running = conn.execute(
            sa.select(db.executions.c.id)
            .where(db.executions.c.id >= low, db.executions.c.id < high, db.executions.c.state.in_(unfinished))
            .limit(1)
        ).first()
        recent = conn.execute(
            sa.select(db.executions.c.id)
            .where(
                db.executions.c.id >= low,
                db.executions.c.id < high,
                db.executions.c.ended_at > now - retention_seconds,
            )
            .limit(1)
        ).first()
        if running is None and recent is None:
            conn.execute(sa.text(f"DROP TABLE {name}"))
            dropped += 1
    return dropped


def _refused_sqlstate(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL errors the asyncpg adapter leaves unclassified (e.g. 22P05, U+0000 in JSONB):
    SQLSTATE classes 22 (data), 23 (integrity), 42 (syntax, access) and 44 (check option)."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in ("22", "23", "42", "44")


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Sorts database failures into the two kinds callers handle differently.

    Unavailable (connection lost, disk full, timeouts): StoreError, so callers can answer
    UNAVAILABLE and retry. Refused (a value or statement the database will never accept):
    ValueError, since a retry cannot help. Constraint violations stay IntegrityError for the
    store's own handling (idempotency, races, blame within a group).
    """
    try:
        yield
    except sa.exc.IntegrityError:
        raise
    except (sa.exc.DataError, sa.exc.ProgrammingError, sa.exc.NotSupportedError) as exc:
        raise ValueError(f"refused by the database: {exc.orig}") from exc
    except sa.exc.DBAPIError as exc:
        if _refused_sqlstate(exc):
            raise ValueError(f"refused by the database: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc
    except sa.exc.StatementError as exc:  # a bind value failed to convert, e.g. not JSON
        raise ValueError(f"cannot store value: {exc.orig}") from exc
    except (sa.exc.DisconnectionError, sa.exc.TimeoutError, OSError, TimeoutError) as exc:
        raise StoreError(f"database unavailable: {exc}") from exc


def _settle(group: list[tuple[_Rows, asyncio.Future[None]]], error: BaseException | None) -> None:
    for rows, future in group:
        if future.done():  # the caller was cancelled; its batch was still written (or not)
            continue
        if error is None:
            future.set_result(rows.result)
        else:
            future.set_exception(error)
