"""SQLite under the SQL core: its connections, WAL readers, no NOTIFY.

`SqliteDatabase` opens and closes the connections: the one write connection (its base,
`SqliteWrites` in sqlite_writes.py, says where each write transaction runs on it and when the
WAL is checkpointed), a small pool of aiosqlite read connections, which WAL lets run alongside,
and two sqlite3 readers on the event loop's thread (`read_now`, and the notification poller's
`poll_connection`). Beside them, what this dialect does its own way: `executemany` straight to
sqlite3, and event retention by delete. Several processes may share the file (`agentrun
run` beside `agentrun serve`): they find each other's rows by polling (sqlite_poll.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage import sqldb
from agentrun.storage.base import StoreError
from agentrun.storage.notifications import Notifications
from agentrun.storage.records import ExecutionState
from agentrun.storage.sqldb import DirectWriter, store_errors
from agentrun.storage.sqlite_poll import SqliteNotifications
from agentrun.storage.sqlite_rows import Plan
from agentrun.storage.sqlite_writes import AUTOCHECKPOINT_PAGES, SqliteWrites, is_busy
from agentrun.storage.writer_thread import WriterThread

if TYPE_CHECKING:
    from agentrun.storage.sqlite_instances import SqliteInstanceWriter

__all__ = ["SqliteDatabase"]

_TERMINAL = [s.value for s in ExecutionState if s.terminal]


class SqliteDatabase(SqliteWrites):
    sqlite: ClassVar[bool] = True
    dialect: ClassVar[str] = "sqlite"
    insert = staticmethod(sqlite_insert)

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        super().__init__(url, synchronous=synchronous, lease_seconds=lease_seconds)
        if self.url.database in (None, "", ":memory:"):
            raise ValueError("SqlStore needs a SQLite file; use the 'memory' store for RAM")
        # executemany: each statement compiled once per set of columns (the statement is kept
        # with its plan, so that its id is not reused).
        self._plans: dict[tuple[int, tuple[str, ...]], Plan] = {}
        # `read_now`: a read connection (sqlite3) used on the event loop's thread only.
        self._now_reader: sa.Engine | None = None
        self._now_conn: sa.Connection | None = None
        # `poll_connection`: the notification poller's own read connection (sqlite3).
        self._poll_reader: sa.Engine | None = None
        self._poll_conn: Any = None

    # Lifecycle -------------------------------------------------------------
    def _connect(self) -> None:
        folder = Path(self.url.database or "").expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the database folder {folder}: {exc}") from exc
        self._engine = self._reader = self._read_engine()
        self._sync_writer = self._write_engine()
        self._now_reader = self._loop_read_engine()
        self._poll_reader = self._loop_read_engine()
        self._thread = WriterThread("agentrun-sqlite-writer")

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

        await self._write(migrate_checked, foreign_keys=False, timed=False)

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
                await self._hand_over(dispose)[1]
            thread.shutdown()
            self._thread = self._sync_writer = None
        now_conn, self._now_conn = self._now_conn, None
        if now_conn is not None:
            with contextlib.suppress(Exception):
                now_conn.close()
        if self._now_reader is not None:
            self._now_reader.dispose()
            self._now_reader = None
        self.drop_poll_connection()
        if self._poll_reader is not None:
            self._poll_reader.dispose()
            self._poll_reader = None
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._reader = None

    def _pragmas(self, engine: Any, *, writer: bool, wait: bool = True) -> None:
        synchronous = self._synchronous
        busy_ms = self.busy_timeout_ms if wait else 0

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide where transactions start.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={synchronous}",
                "foreign_keys=ON",
                # The writer sets its wait per transaction (`_run`); readers wait.
                f"busy_timeout={0 if writer else busy_ms}",
                # The backstop: the writer thread checkpoints first (`_checkpoint_soon`).
                *((f"wal_autocheckpoint={AUTOCHECKPOINT_PAGES}",) if writer else ()),
                *(() if writer else ("query_only=ON",)),
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

    def _read_engine(self) -> AsyncEngine:
        """Read connections (aiosqlite); WAL lets them run beside the writer."""
        engine = create_async_engine(self.url, pool_size=4, max_overflow=4)
        self._pragmas(engine.sync_engine, writer=False)
        return engine

    def _loop_read_engine(self) -> sa.Engine:
        """`read_now`'s connection (sqlite3): a reader that never waits for a lock (the loop
        must not), on the loop's thread."""
        url = self.url.set(drivername="sqlite")
        engine = sa.create_engine(
            url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
        )
        self._pragmas(engine, writer=False, wait=False)
        return engine

    def _write_engine(self) -> sa.Engine:
        """The one write connection (sqlite3): in the writer thread, or on the loop's thread
        while the writer thread is idle (`_inline_ready`), never in both at once."""
        url = self.url.set(drivername="sqlite")
        engine = sa.create_engine(
            url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
        )
        self._pragmas(engine, writer=True)
        return engine

    # Work ------------------------------------------------------------------
    async def read_now(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> list[sa.Row[Any]]:
        """On the event loop's thread: a read by key of a few rows costs less there than the
        hand-offs of an aiosqlite read (five thread wake-ups each way: cursor, execute, fetch,
        close, the pool's rollback), which the loop waits for anyway. A WAL reader does not
        wait for the writer; if the file is locked all the same (another process recovering
        it), the read goes through the pool, which waits."""
        if self._now_reader is None or self.closing:
            raise StoreError("the store is not open")
        conn = self._now_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._now_conn = self._now_reader.connect()
        try:
            with store_errors():
                rows = list(conn.execute(statement, params).all())
                conn.rollback()  # no read stays open: checkpoints are not held back
                return rows
        except StoreError as exc:
            self._now_conn = None  # the next read starts on a clean connection
            with contextlib.suppress(Exception):
                conn.close()
            if not is_busy(exc.__cause__ or exc):
                raise
        return await self.read(statement, params)

    def poll_connection(self) -> sqlite3.Connection:
        """The notification poller's read connection (sqlite_poll.py), a sqlite3 handle used
        on the event loop's thread only, as `read_now`'s: it never waits for a lock, and no
        read stays open after a statement is fetched. It never writes, so its `PRAGMA
        data_version` moves exactly when some other connection committed."""
        if self._poll_reader is None or self.closing:
            raise StoreError("the store is not open")
        if self._poll_conn is None:
            self._poll_conn = self._poll_reader.raw_connection()
        driver: sqlite3.Connection = self._poll_conn.driver_connection
        return driver

    def drop_poll_connection(self) -> None:
        """Closes the poller's connection (after an error: the next one starts clean)."""
        conn, self._poll_conn = self._poll_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()

    def turn_writer(self) -> DirectWriter:
        from agentrun.storage.sqlite_turns import SqliteTurnWriter

        return SqliteTurnWriter(self)

    def instance_writer(self) -> SqliteInstanceWriter:
        """State machine instance commits straight through sqlite3 (sqlite_instances.py)."""
        from agentrun.storage.sqlite_instances import SqliteInstanceWriter

        return SqliteInstanceWriter(self)

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
            plan = self._plans[(id(statement), keys)] = Plan(statement, conn.dialect, keys)
        params = plan.params(rows)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(plan.sql, params)
            return int(cursor.rowcount)
        except sqlite3.Error as exc:
            # As SQLAlchemy would raise it: IntegrityError for a constraint, and so on.
            raise sa.exc.DBAPIError.instance(plan.sql, None, exc, sqlite3.Error) from exc
        finally:
            cursor.close()

    def notification_channel(self) -> Notifications:
        return SqliteNotifications(self)

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        """Deletes the events of executions that ended before the retention (one table:
        nothing to prepare), but the table's newest row (highest rowid), whoever's it is:
        SQLite gives a new row the highest rowid + 1, so deleting the newest rows would hand
        their rowids out again, below the mark of every poller that saw them
        (sqlite_poll.py), who would not announce the new rows. That row goes at a later
        pass, once a newer one exists."""
        self.require_open()
        if retention_seconds is None:
            return 0
        t, e = db.executions, db.events
        old = sa.select(t.c.id).where(
            t.c.state.in_(_TERMINAL), t.c.ended_at < now - retention_seconds
        )
        newest: sa.Select[Any] = sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(e)
        delete = e.delete().where(
            e.c.execution_id.in_(old), sa.literal_column("rowid") < newest.scalar_subquery()
        )
        return await self.transaction(lambda conn: conn.execute(delete).rowcount)
