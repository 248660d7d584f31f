"""The SQL core every repository shares: connections, migrations, `transaction()` and `read()`.

`SqlDatabase.create(url)` gives the dialect's subclass, in the manner of DBOS's SystemDatabase
and its sqlite and postgres modules: `SqliteDatabase` (sqldb_sqlite.py: one writer thread with
`BEGIN IMMEDIATE`, WAL readers) or `PostgresDatabase` (sqldb_postgres.py: asyncpg, a lease
pool, deadlock retries). What differs between the two lives there, behind the hooks this
class declares, so that the repositories (workflows.py, executions.py, notifications.py,
machines.py, ...) hold one `SqlDatabase` and never ask which dialect it is:
- `transaction(work)`: one write transaction, `retry_unique(work)` for read-then-insert races;
- `group_commit(apply, explain)`: a writer that shares one transaction among many callers;
- `executemany(conn, statement, rows)`: one statement for many rows, as fast as the dialect can;
- `notify_in(conn, kind, keys)`: a cross-replica wake-up sent when the transaction commits;
- `notification_channel()`: the `Notifications` that receives them (NOTIFY or polling);
- `maintain_events(now, retention)`: the event log's upkeep (partitions, or deletes).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentrun.storage.base import StoreError
from agentrun.storage.group_commit import DirectWriter, GroupCommit

if TYPE_CHECKING:
    from agentrun.storage.notifications import Notifications
    from agentrun.storage.pg_instances import InstanceWriter
    from agentrun.storage.sqlite_instances import SqliteInstanceWriter

__all__ = [
    "IDLE_IN_TRANSACTION_MS",
    "DirectWriter",
    "Row",
    "SqlDatabase",
    "claim_leases",
    "store_errors",
]

T = TypeVar("T")
Item = TypeVar("Item")
# A result row of any width (Row[Any] would be a row of one column).
Row = sa.Row[*tuple[Any, ...]]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# Concurrent writers on PostgreSQL may race for the same new version / signal seq.
_UNIQUE_RETRIES = 20
# Our transactions are short; one idle this long belongs to a frozen or lost process (the
# floor: a store that knows its lease waits that long).
IDLE_IN_TRANSACTION_MS = 5_000
_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class SqlDatabase(abc.ABC):
    """One SQLite file or PostgreSQL database, open or not.

    `synchronous` is SQLite's PRAGMA: FULL (the default) makes every returned commit survive
    power loss; NORMAL is faster in WAL mode but may lose the last commits on power loss
    (never on a process crash). `lease_seconds` bounds how long PostgreSQL lets a session
    idle inside a transaction.
    """

    # Which dialect, for the few callers that must know (SQLite has no shared scheduler).
    sqlite: ClassVar[bool]
    dialect: ClassVar[str]
    # The dialect's INSERT, for ON CONFLICT clauses.
    insert: ClassVar[Callable[..., Any]]
    # How long a SQLite write waits for another process's write lock before StoreError.
    busy_timeout_ms = 10_000

    @staticmethod
    def create(
        url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> SqlDatabase:
        """The database `url` names (sqlite+aiosqlite:///path or postgresql+asyncpg://...)."""
        driver = sa.make_url(url).drivername
        if driver not in _DRIVERS:
            raise ValueError(
                f"unsupported database URL {driver!r}: use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
            )
        cls: type[SqlDatabase]
        if driver == "sqlite+aiosqlite":
            from agentrun.storage.sqldb_sqlite import SqliteDatabase as cls
        else:
            from agentrun.storage.sqldb_postgres import PostgresDatabase as cls
        return cls(url, synchronous=synchronous, lease_seconds=lease_seconds)

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        self.url = sa.make_url(url)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        self._synchronous = synchronous.upper()
        # PostgreSQL ends a session idle inside a transaction this long: a frozen replica must
        # not keep row locks that hide its executions from claims. Up to the lease, that still
        # frees them within lease + lease/3 of the freeze; shorter, it would also end the
        # sessions of a live replica whose loop stalled for a few seconds on a busy machine.
        self._idle_in_transaction_ms = max(IDLE_IN_TRANSACTION_MS, int((lease_seconds or 0) * 1000))
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self.closing = False

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
        self._connect()
        try:
            if not await self._schema_current():
                await self._migrate_schema()
        except BaseException:
            await self.dispose()
            raise
        return True

    @abc.abstractmethod
    def _connect(self) -> None:
        """Creates the engines (connections are made on first use)."""

    async def _migrate_schema(self) -> None:
        """Brings the schema to the migrations' head in one transaction."""
        await self.transaction(_migrate)

    async def _schema_current(self) -> bool:
        """Whether the database is at the migrations' head, read outside any transaction:
        a replica restarting on a busy machine then never sits inside a transaction while
        alembic loads its scripts (PostgreSQL ended such sessions as idle in transaction)."""
        try:
            rows = await self.read(sa.text("SELECT version_num FROM alembic_version"))
        except Exception:
            return False
        return {row[0] for row in rows} == {_migration_head()}

    @abc.abstractmethod
    async def dispose(self) -> None:
        """Closes every connection; `transaction` works until then, `read` until `closing`."""

    # Work ------------------------------------------------------------------
    def require_open(self) -> None:
        if not self.is_open:
            raise StoreError("the store is not open")

    @abc.abstractmethod
    async def transaction(self, work: Callable[[sa.Connection], T], *, leases: bool = False) -> T:
        """Runs `work` (plain, synchronous SQLAlchemy Core) in one write transaction
        (`leases`: on connections of their own where the dialect keeps some); constraint
        violations pass through raw (IntegrityError), other failures as StoreError
        (unavailable) or ValueError (refused), see `store_errors`."""

    async def group_transaction(self, work: Callable[[sa.Connection], T], *, items: int) -> T:
        """The `transaction` of a group commit of `items` batches (group_commit.py); a
        dialect may run small ones its own faster way (SQLite: on the loop's thread)."""
        return await self.transaction(work)

    # Whether two writers may race for the same unique key (PostgreSQL); SQLite serialises
    # its writes, so a violation there is never a race.
    unique_races: ClassVar[bool] = False

    async def retry_unique(self, work: Callable[[sa.Connection], T]) -> T:
        """A `transaction` for a read-then-insert that may lose a race to a concurrent
        writer; retried a few times before the IntegrityError passes through."""
        for attempt in range(_UNIQUE_RETRIES):
            try:
                return await self.transaction(work)
            except sa.exc.IntegrityError:
                if not self.unique_races or attempt == _UNIQUE_RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")

    def group_commit(
        self,
        apply: Callable[[sa.Connection, Sequence[Item]], Sequence[Any] | None],
        explain: Callable[[Item, Exception], Awaitable[BaseException]],
        *,
        name: str,
        direct: DirectWriter | None = None,
    ) -> GroupCommit[Item]:
        """A group-commit writer on this database (group_commit.py): what `apply` writes for
        many callers' items shares one `transaction` (or `direct`'s own way, when it covers the
        group); the owner starts and closes it."""
        return GroupCommit(self, apply, explain, name=name, direct=direct)

    def turn_writer(self) -> DirectWriter | None:
        """The dialect's own writer of execution turns, faster than `transaction` and `apply`
        (PostgreSQL: one statement, pg_turns.py); None: the group commit's transaction."""
        return None

    def instance_writer(self) -> InstanceWriter | SqliteInstanceWriter | None:
        """Likewise for state machine instance commits (pg_instances.py, sqlite_instances.py)."""
        return None

    def executemany(
        self, conn: sa.Connection, statement: sa.Executable, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Runs `statement` once per row inside `work` of a `transaction`; how many rows it
        changed (-1 when the driver cannot tell); nothing at all for no rows."""
        if not rows:
            return 0
        return conn.execute(statement, list(rows)).rowcount

    def notify_in(self, conn: sa.Connection, kind: str, keys: Sequence[str]) -> None:
        """Announces `kind` for `keys` to the other replicas when the caller's transaction
        commits. Nothing by default: a dialect without NOTIFY lets its pollers find the rows."""

    @abc.abstractmethod
    def notification_channel(self) -> Notifications:
        """The `Notifications` of this database (how wake-ups are received)."""

    @abc.abstractmethod
    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        """Prepares the next days' event storage and drops the events of executions that
        ended more than `retention_seconds` ago; how many units were dropped (`Store`)."""

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection of its own, outside the store's transactions: for inspecting
        the database (PRAGMAs, the schema) and for tools that manage it (on SQLite, read-only)."""
        engine = self._engine
        if engine is None or self.closing:
            raise StoreError("the store is not open")
        async with engine.connect() as conn:
            yield conn

    async def read(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> list[Row]:
        """Runs one statement on a read connection (autocommit on PostgreSQL); `params` for
        a statement built once (its cache key is computed once, not per call)."""
        reader = self._reader
        if reader is None or self.closing:
            raise StoreError("the store is not open")
        with store_errors():
            async with reader.connect() as conn:
                return list((await conn.execute(statement, params)).all())

    async def read_now(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> list[Row]:
        """`read` for a short read by key (a few rows) on a path that waits for it: a
        dialect may run it its own faster way (SQLite: on the loop's thread, no hand-off)."""
        return await self.read(statement, params)


@functools.cache
def _migration_head() -> str | None:
    """The migrations' head revision. Read from the revision files' `revision = "..."` and
    `down_revision = "..."` lines when each file has one of both and the chain has a single
    head: a server reopening a database at the head then never imports Alembic (67 modules,
    and parsing every script, ~0.1 s of CPU per start); Alembic decides anything else."""
    return _head_from_files(Path(__file__).with_name("migrations") / "versions") or (
        _alembic_head()
    )


_REVISION_LINE = re.compile(
    r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:None|(['"])(\w+)\2)\s*(?:#.*)?$""",
    re.MULTILINE,
)
# Branch labels and cross-branch dependencies: Alembic's to read.
_LABEL_LINE = re.compile(
    r"^(?:branch_labels|depends_on)\s*(?::[^=]*)?=(?!\s*None\s*(?:#.*)?$)", re.MULTILINE
)


def _head_from_files(versions: Path) -> str | None:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if _LABEL_LINE.search(text):
            return None
        found: dict[str, str | None] = {}
        for match in _REVISION_LINE.finditer(text):
            if match[1] in found:
                return None
            found[match[1]] = match[3]
        revision = found.get("revision")
        if revision is None or "down_revision" not in found or revision in revisions:
            return None
        revisions.add(revision)
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _alembic_head() -> str | None:
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


def claim_leases(
    conn: sa.Connection,
    table: sa.Table,
    candidates: sa.Select[Any],
    *,
    owner: str,
    now: float,
    lease_seconds: float,
    also: dict[str, Any] | None = None,
) -> list[Row]:
    """Takes the leases of the rows `candidates` selects (their ids, locked with SKIP LOCKED):
    a new owner and epoch, so a stale holder's fenced commits are refused. Executions and
    state machine instances are claimed the same way; only which rows are free differs. One
    statement (UPDATE ... WHERE id IN (candidates) RETURNING): on PostgreSQL a page claimed
    costs BEGIN, it and COMMIT, where a SELECT, UPDATE and re-read cost two round trips more.
    `also`: more columns to assign (SQLite's executions: their last sequence folded in)."""
    claim = (
        table.update()
        .where(table.c.id.in_(candidates.scalar_subquery()))
        .values(
            owner=owner,
            lease_epoch=table.c.lease_epoch + 1,
            lease_expires_at=now + lease_seconds,
            **(also or {}),
        )
        .returning(*table.c)
    )
    return sorted(conn.execute(claim), key=lambda row: row.id)
