"""The SQL core every repository shares: connections, migrations, `transaction()` and `read()`.

SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg) through SQLAlchemy Core. SQLite allows one
writer at a time, so every write goes through one long-lived connection that starts its
transactions with `BEGIN IMMEDIATE` (no lock upgrades, no SQLITE_BUSY half way through), on a
thread of its own; reads use a small pool of separate connections, which WAL lets run
alongside. The executions and instances repositories (sql.py, machines.py) hold one
`SqlDatabase` and use only its public methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError

__all__ = ["IDLE_IN_TRANSACTION_MS", "SqlDatabase", "store_errors"]

T = TypeVar("T")
# A result row of any width (Row[Any] would be a row of one column).
Row = sa.Row[*tuple[Any, ...]]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# Concurrent writers on PostgreSQL may race for the same new version / signal seq.
_UNIQUE_RETRIES = 20
# Our transactions are short; one idle this long belongs to a frozen or lost process (the
# floor: a store that knows its lease waits that long).
IDLE_IN_TRANSACTION_MS = 5_000


class SqlDatabase:
    """One SQLite file or PostgreSQL database, open or not.

    `synchronous` is SQLite's PRAGMA: FULL (the default) makes every returned commit survive
    power loss; NORMAL is faster in WAL mode but may lose the last commits on power loss
    (never on a process crash).
    """

    # How long a SQLite write waits for another process's write lock before StoreError.
    busy_timeout_ms = 10_000

    def __init__(self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None) -> None:
        self.url = sa.make_url(url)
        if self.url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"unsupported database URL {self.url.drivername!r}: "
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
        self.sqlite = self.url.get_backend_name() == "sqlite"
        if self.sqlite and self.url.database in (None, "", ":memory:"):
            raise ValueError("SqlStore needs a SQLite file; use the 'memory' store for RAM")
        # The dialect's INSERT, for ON CONFLICT clauses.
        self.insert = sqlite.insert if self.sqlite else postgresql.insert
        self._engine: AsyncEngine | None = None
        self._lease_engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        # SQLite: every write runs on one thread with a plain sqlite3 connection, so a group
        # commit costs one hand-off between threads instead of one per statement.
        self._sync_writer: sa.Engine | None = None
        self._sync_conn: sa.Connection | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self.closing = False

    @property
    def dialect(self) -> str:
        return "sqlite" if self.sqlite else "postgresql"

    @property
    def is_open(self) -> bool:
        """Open and not closing: new work may start."""
        return self._engine is not None and not self.closing

    # Lifecycle -------------------------------------------------------------
    async def open(self) -> bool:
        """Connects and migrates the schema; False if it was open already."""
        if self._engine is not None:
            return False
        self.closing = False
        if self.sqlite:
            folder = Path(self.url.database or "").expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database folder {folder}: {exc}") from exc
            self._engine = self._reader = self._sqlite_engine()
            self._sync_writer = self._sqlite_writer()
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agentrun-sqlite-writer")
        else:
            options: dict[str, Any] = {
                # asyncpg waits 60 s for a connection by default; fail over sooner. A replica
                # frozen inside a transaction (SIGSTOP, a VM pause) must not keep its row locks,
                # which would hide its executions from the other replicas' claims.
                "connect_args": {
                    "timeout": 10,
                    "server_settings": {"idle_in_transaction_session_timeout": str(self._idle_in_transaction_ms)},
                },
                "json_serializer": db.jsonb_dumps,
            }
            # 28 + 2 for leases + 1 LISTEN: 31 connections at most per replica, as documented.
            self._engine = create_async_engine(self.url, pool_size=10, max_overflow=18, **options)
            # Lease renewals and claims on connections of their own: a burst of reads and
            # commits that holds every pooled connection must not make a live replica's
            # renewal wait until its leases expired.
            self._lease_engine = create_async_engine(self.url, pool_size=1, max_overflow=1, **options)
            # Single-statement reads need no BEGIN/ROLLBACK round trips.
            self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not await self._schema_current():
                await self._migrate()
        except BaseException:
            await self.dispose()
            raise
        return True

    async def _migrate(self) -> None:
        """Brings the schema to the migrations' head in one transaction.

        On SQLite, batch migrations rebuild a table (copy, drop, rename); with foreign keys
        on, dropping `executions` would cascade to every node, event and signal. SQLite
        ignores the PRAGMA inside a transaction, so it is turned off around it, and the
        references are checked before the commit (a violation rolls everything back)."""
        if not self.sqlite:
            await self.transaction(_migrate)
            return

        def migrate_checked(conn: sa.Connection) -> None:
            _migrate(conn)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise StoreError(f"migrating left rows with broken references: {broken[:5]}")

        await self.transaction(migrate_checked, foreign_keys=False)

    async def _schema_current(self) -> bool:
        """Whether the database is at the migrations' head, read outside any transaction:
        a replica restarting on a busy machine then never sits inside a transaction while
        alembic loads its scripts (PostgreSQL ended such sessions as idle in transaction)."""
        try:
            rows = await self.read(sa.text("SELECT version_num FROM alembic_version"))
        except Exception:
            return False
        return {row[0] for row in rows} == {_migration_head()}

    async def dispose(self) -> None:
        """Closes every connection; `transaction` works until then, `read` until `closing`."""
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
        engine = create_async_engine(self.url, pool_size=4, max_overflow=4)
        self._sqlite_pragmas(engine.sync_engine, writer=False)
        return engine

    def _sqlite_writer(self) -> sa.Engine:
        """The one write connection (sqlite3), used only from the writer thread."""
        url = self.url.set(drivername="sqlite")
        engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
        self._sqlite_pragmas(engine, writer=True)
        return engine

    # Work ------------------------------------------------------------------
    def require_open(self) -> None:
        if not self.is_open:
            raise StoreError("the store is not open")

    async def transaction(
        self, work: Callable[[sa.Connection], T], *, leases: bool = False, foreign_keys: bool = True
    ) -> T:
        """Runs `work` (plain, synchronous SQLAlchemy Core) in one write transaction: on
        SQLite in the writer thread, on PostgreSQL through asyncpg (`leases`: on the lease
        pool); constraint violations pass through raw (IntegrityError), other failures as
        StoreError (unavailable) or ValueError (refused), see `store_errors`.
        `foreign_keys=False` (SQLite, migrations only) turns enforcement off around it."""
        engine = self._engine
        if leases and self._lease_engine is not None and engine is not None:
            engine = self._lease_engine
        if engine is None:
            raise StoreError("the store is not open")
        with store_errors():
            if not self.sqlite:
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

            return await asyncio.get_running_loop().run_in_executor(thread, in_thread)

    async def retry_unique(self, work: Callable[[sa.Connection], T]) -> T:
        """A `transaction` for a read-then-insert that may lose a race to a concurrent
        writer (PostgreSQL); retried a few times before the IntegrityError passes through."""
        for attempt in range(_UNIQUE_RETRIES):
            try:
                return await self.transaction(work)
            except sa.exc.IntegrityError:
                if self.sqlite or attempt == _UNIQUE_RETRIES - 1:
                    raise  # SQLite writes are serialised: a violation is not a race.
                await asyncio.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection of its own, outside the store's transactions: for inspecting
        the database (PRAGMAs, the schema) and for tools that manage it (on SQLite, read-only)."""
        engine = self._engine
        if engine is None or self.closing:
            raise StoreError("the store is not open")
        async with engine.connect() as conn:
            yield conn

    async def read(self, statement: sa.Executable) -> list[Row]:
        """Runs one statement on a read connection (autocommit on PostgreSQL)."""
        reader = self._reader
        if reader is None or self.closing:
            raise StoreError("the store is not open")
        with store_errors():
            async with reader.connect() as conn:
                return list((await conn.execute(statement)).all())


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


def _refused_sqlstate(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL errors the asyncpg adapter leaves unclassified (e.g. 22P05, U+0000 in JSONB):
    SQLSTATE classes 22 (data), 23 (integrity), 42 (syntax, access) and 44 (check option)."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in ("22", "23", "42", "44")


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
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
