"""SQLite under the SQL core: one writer thread, WAL readers, no NOTIFY.

SQLite allows one writer at a time, so every write goes through one long-lived sqlite3
connection that starts its transactions with `BEGIN IMMEDIATE` (no lock upgrades, no
SQLITE_BUSY half way through), on a thread of its own: a group commit costs one hand-off
between threads instead of one per statement. Reads use a small pool of aiosqlite
connections, which WAL lets run alongside. Several processes may share the file (`agentrun
run` beside `agentrun serve`): they find each other's rows by polling (notifications.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage import sqldb
from agentrun.storage.base import StoreError
from agentrun.storage.notifications import Notifications, SqliteNotifications
from agentrun.storage.records import ExecutionState
from agentrun.storage.sqldb import SqlDatabase, store_errors

__all__ = ["SqliteDatabase"]

T = TypeVar("T")

_TERMINAL = [s.value for s in ExecutionState if s.terminal]


class SqliteDatabase(SqlDatabase):
    sqlite: ClassVar[bool] = True
    dialect: ClassVar[str] = "sqlite"
    insert = staticmethod(sqlite_insert)

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        super().__init__(url, synchronous=synchronous, lease_seconds=lease_seconds)
        if self.url.database in (None, "", ":memory:"):
            raise ValueError("SqlStore needs a SQLite file; use the 'memory' store for RAM")
        self._sync_writer: sa.Engine | None = None
        self._sync_conn: sa.Connection | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        # executemany: each statement compiled once per set of columns (the statement is kept
        # with its plan, so that its id is not reused).
        self._plans: dict[
            tuple[int, tuple[str, ...]], tuple[sa.Executable, str, list[tuple[str, Any]]]
        ] = {}

    # Lifecycle -------------------------------------------------------------
    def _connect(self) -> None:
        folder = Path(self.url.database or "").expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database folder {folder}: {exc}") from exc
        self._engine = self._reader = self._read_engine()
        self._sync_writer = self._write_engine()
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="agentrun-sqlite-writer"
        )

    async def _migrate_schema(self) -> None:
        """Batch migrations rebuild a table (copy, drop, rename); with foreign keys on,
        dropping `executions` would cascade to every node, event and signal. SQLite ignores
        the PRAGMA inside a transaction, so it is turned off around it, and the references
        are checked before the commit (a violation rolls everything back)."""

        def migrate_checked(conn: sa.Connection) -> None:
            sqldb._migrate(conn)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise StoreError(f"migrating left rows with broken references: {broken[:5]}")

        await self._write(migrate_checked, foreign_keys=False)

    async def dispose(self) -> None:
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
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._reader = None

    def _pragmas(self, engine: Any, *, writer: bool) -> None:
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

    def _read_engine(self) -> AsyncEngine:
        """Read connections (aiosqlite); WAL lets them run beside the writer."""
        engine = create_async_engine(self.url, pool_size=4, max_overflow=4)
        self._pragmas(engine.sync_engine, writer=False)
        return engine

    def _write_engine(self) -> sa.Engine:
        """The one write connection (sqlite3), used only from the writer thread."""
        url = self.url.set(drivername="sqlite")
        engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
        self._pragmas(engine, writer=True)
        return engine

    # Work ------------------------------------------------------------------
    async def transaction(self, work: Callable[[sa.Connection], T], *, leases: bool = False) -> T:
        """In the writer thread (`leases` changes nothing: there is one writer)."""
        return await self._write(work, foreign_keys=True)

    async def _write(self, work: Callable[[sa.Connection], T], *, foreign_keys: bool) -> T:
        if self._engine is None:
            raise StoreError("the store is not open")
        writer, thread = self._sync_writer, self._thread
        assert writer is not None and thread is not None

        def in_thread() -> T:
            # One connection, kept for the store's life: no pool checkout or reset per
            # transaction. Dropped after a failure, so the next one starts clean.
            conn = self._sync_conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._sync_conn = writer.connect()
            raw = conn.connection.driver_connection
            assert raw is not None
            try:
                if not foreign_keys:
                    raw.execute("PRAGMA foreign_keys=OFF")
                with conn.begin():
                    return work(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                self._sync_conn = None
                raise
            finally:
                if not foreign_keys and self._sync_conn is conn:
                    raw.execute("PRAGMA foreign_keys=ON")

        with store_errors():
            return await asyncio.get_running_loop().run_in_executor(thread, in_thread)

    def executemany(
        self, conn: sa.Connection, statement: sa.Executable, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Straight to sqlite3's executemany, parameters encoded by the columns' own types
        (JSON as text, NULL for None), so reads through SQLAlchemy see the same rows:
        SQLAlchemy's per-row parameter handling cost more than the disk on a busy group
        commit. The statement is compiled once per set of columns."""
        if not rows:
            return 0
        keys = tuple(rows[0])
        plan = self._plans.get((id(statement), keys))
        if plan is None:
            compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))  # type: ignore[attr-defined]
            processors = [
                (
                    name,
                    compiled.binds[name]
                    .type.dialect_impl(conn.dialect)
                    .bind_processor(conn.dialect),
                )
                for name in compiled.positiontup
            ]
            plan = self._plans[(id(statement), keys)] = (statement, compiled.string, processors)
        _, sql, processors = plan
        params = [tuple(p(row[n]) if p else row[n] for n, p in processors) for row in rows]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, params)
            return int(cursor.rowcount)
        except sqlite3.Error as exc:
            # As SQLAlchemy would raise it: IntegrityError for a constraint, and so on.
            raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        finally:
            cursor.close()

    def notification_channel(self) -> Notifications:
        return SqliteNotifications(self)

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        """Deletes the events of executions that ended before the retention (one table:
        nothing to prepare)."""
        self.require_open()
        if retention_seconds is None:
            return 0
        t, e = db.executions, db.events
        old = sa.select(t.c.id).where(
            t.c.state.in_(_TERMINAL), t.c.ended_at < now - retention_seconds
        )
        return await self.transaction(
            lambda conn: conn.execute(e.delete().where(e.c.execution_id.in_(old))).rowcount
        )
