"""PostgreSQL under the SQL core: asyncpg pools, deadlock retries, NOTIFY, event partitions.

Writers on several replicas run at once: a transaction a deadlock or serialization failure
rolled back is run again, and a read-then-insert that lost a race for a unique key too
(`retry_unique`). Lease renewals and claims have a small pool of their own, so that a burst
of reads and commits holding every pooled connection cannot make a live replica renew late.
The `events` table is partitioned by day of execution id (migration 0006); `maintain_events`
keeps the partitions ahead and drops those past the retention.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError
from agentrun.storage.notifications import CHANNEL, Notifications, PostgresNotifications, chunks
from agentrun.storage.records import ExecutionState
from agentrun.storage.sqldb import DirectWriter, SqlDatabase, store_errors

if TYPE_CHECKING:
    import asyncpg

__all__ = ["WRITER_APPLICATION", "PostgresDatabase"]

T = TypeVar("T")

# SQLSTATEs of a transaction PostgreSQL rolled back that may simply be run again.
_RETRIED = ("40P01", "40001")  # deadlock detected, serialization failure
_ATTEMPTS = 3
# SQLSTATE classes of a lost or refused connection (08), a server going away (57: admin or
# crash shutdown) or out of resources (53): no fault of the statement's.
_UNAVAILABLE = ("08", "57", "53")
# The application_name of the execution writer's connection (pg_stat_activity shows it).
WRITER_APPLICATION = "agentrun-writer"


class PostgresDatabase(SqlDatabase):
    sqlite: ClassVar[bool] = False
    dialect: ClassVar[str] = "postgresql"
    insert = staticmethod(postgresql_insert)
    unique_races: ClassVar[bool] = True

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        super().__init__(url, synchronous=synchronous, lease_seconds=lease_seconds)
        self._lease_engine: AsyncEngine | None = None
        # The execution writer's own connection (pg_turns.py) and its prepared statements.
        self._writer: asyncpg.Connection | None = None
        self._writer_lock: asyncio.Lock | None = None
        self._prepared: dict[str, asyncpg.prepared_stmt.PreparedStatement] = {}

    def _connect(self) -> None:
        options: dict[str, Any] = {
            # asyncpg waits 60 s for a connection by default; fail over sooner. A replica
            # frozen inside a transaction (SIGSTOP, a VM pause) must not keep its row locks,
            # which would hide its executions from the other replicas' claims.
            "connect_args": {
                "timeout": 10,
                "server_settings": {
                    "idle_in_transaction_session_timeout": str(self._idle_in_transaction_ms)
                },
            },
            "json_serializer": db.jsonb_dumps,
        }
        # 27 + 1 for the execution writer + 2 for leases + 1 LISTEN: 31 connections at most
        # per replica, as documented.
        self._engine = create_async_engine(self.url, pool_size=10, max_overflow=17, **options)
        # Lease renewals and claims on connections of their own: a burst of reads and
        # commits that holds every pooled connection must not make a live replica's
        # renewal wait until its leases expired.
        self._lease_engine = create_async_engine(self.url, pool_size=1, max_overflow=1, **options)
        # Single-statement reads need no BEGIN/ROLLBACK round trips.
        self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        await self.drop_writer_connection()
        # The reader is a view of the same engine and pool.
        if self._engine is not None:
            await self._engine.dispose()
        if self._lease_engine is not None:
            await self._lease_engine.dispose()
        self._engine = self._reader = self._lease_engine = None

    async def transaction(self, work: Callable[[sa.Connection], T], *, leases: bool = False) -> T:
        """Through asyncpg (`leases`: on the lease pool); run again after a deadlock or a
        serialization failure, which rolled everything back."""
        engine = self._lease_engine if leases and self._lease_engine is not None else self._engine
        if engine is None or self._engine is None:
            raise StoreError("the store is not open")
        with store_errors():
            for attempt in range(_ATTEMPTS):
                try:
                    async with engine.begin() as conn:
                        return await conn.run_sync(work)
                except sa.exc.DBAPIError as exc:
                    if (
                        getattr(exc.orig, "sqlstate", None) not in _RETRIED
                        or attempt == _ATTEMPTS - 1
                    ):
                        raise
        raise AssertionError("unreachable")

    def turn_writer(self) -> DirectWriter | None:
        """Execution turns in one round trip each (pg_turns.py)."""
        from agentrun.storage.pg_turns import TurnWriter

        return TurnWriter(self)

    async def writer_fetchrow(self, sql: str, args: Sequence[Any]) -> asyncpg.Record:
        """Runs `sql`, prepared once, on the execution writer's own connection (connected
        on first use, with the pool's timeout and idle-in-transaction limit), one caller at a
        time. A lost connection or a server going away: StoreError (the statement may or
        may not have committed) and a new connection next time; an error PostgreSQL answers
        for the statement itself (nothing written) passes through as asyncpg raised it."""
        if self._engine is None or self.closing:
            raise StoreError("the store is not open")
        import asyncpg

        if self._writer_lock is None:
            self._writer_lock = asyncio.Lock()
        async with self._writer_lock:
            try:
                writer = self._writer
                if writer is None or writer.is_closed():
                    writer = await self._connect_writer()
                prepared = self._prepared.get(sql)
                if prepared is None:
                    prepared = self._prepared[sql] = await writer.prepare(sql)
                return await prepared.fetchrow(*args)
            except asyncio.CancelledError:
                # Mid-statement: the connection's state is unknown, a new one next time.
                self._drop_writer(terminate=True)
                raise
            except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
                self._drop_writer(terminate=True)
                raise StoreError(f"database unavailable: {exc}") from exc
            except asyncpg.PostgresError as exc:
                if str(getattr(exc, "sqlstate", ""))[:2] in _UNAVAILABLE:
                    self._drop_writer(terminate=True)
                    raise StoreError(f"database unavailable: {exc}") from exc
                raise

    async def _connect_writer(self) -> asyncpg.Connection:
        import asyncpg

        self._prepared = {}
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._writer = await asyncpg.connect(
            dsn,
            timeout=10,
            server_settings={
                "idle_in_transaction_session_timeout": str(self._idle_in_transaction_ms),
                "application_name": WRITER_APPLICATION,
            },
        )
        return self._writer

    def _drop_writer(self, *, terminate: bool = False) -> asyncpg.Connection | None:
        writer, self._writer, self._prepared = self._writer, None, {}
        if writer is not None and terminate and not writer.is_closed():
            writer.terminate()
        return writer

    async def drop_writer_connection(self) -> None:
        """Closes the execution writer's connection (the store closes)."""
        writer = self._drop_writer()
        if writer is not None and not writer.is_closed():
            try:
                await writer.close(timeout=1)
            except Exception:
                writer.terminate()

    def notify_in(self, conn: sa.Connection, kind: str, keys: Sequence[str]) -> None:
        """pg_notify in the caller's transaction: delivered when it commits, never if it
        rolls back; ids chunked under NOTIFY's 8000-byte payload limit."""
        for chunk in chunks(keys):
            conn.execute(sa.select(sa.func.pg_notify(CHANNEL, f"{kind}:{chunk}")))

    async def notify_now(self, kind: str, keys: Sequence[str]) -> None:
        """Announces `kind` for `keys` at once, outside any transaction: one statement in
        autocommit (works until `dispose`, as `transaction` does)."""
        engine = self._reader
        if engine is None:
            raise StoreError("the store is not open")
        statement = sa.select(
            *(sa.func.pg_notify(CHANNEL, f"{kind}:{chunk}") for chunk in chunks(keys))
        )
        with store_errors():
            async with engine.connect() as conn:
                await conn.execute(statement)

    def notification_channel(self) -> Notifications:
        return PostgresNotifications(self)

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        self.require_open()
        return await self.transaction(
            lambda conn: _maintain_partitions(conn, now, retention_seconds)
        )


_DAY = 86_400
_PARTITION = re.compile(r"^events_d(\d{8})$")
_UNFINISHED = [s.value for s in ExecutionState if not s.terminal]


def _day_bounds(day: datetime.date) -> tuple[str, str]:
    """The execution-id range of executions created that day (UTC): ids start with the
    creation time in milliseconds as 12 hex digits."""
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
    return f"{int(start * 1000):012x}", f"{int((start + _DAY) * 1000):012x}"


def _maintain_partitions(conn: sa.Connection, now: float, retention_seconds: float | None) -> int:
    """Creates the daily partitions of `events` for yesterday to two days ahead, and drops
    those older than the retention whose executions have all ended."""
    # One maintainer at a time across replicas; the others skip this round.
    if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(7415001)")).scalar():
        return 0
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
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
                    sa.text(
                        f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{low}') TO ('{high}')"
                    )
                )
        except sa.exc.DBAPIError:
            # Rows of that day already sit in the default partition (the table was just
            # partitioned): they stay there, the day goes without a partition of its own.
            continue
    if retention_seconds is None:
        return 0
    dropped = 0
    t = db.executions
    for name in sorted(existing):
        match = _PARTITION.match(name)
        if match is None:
            continue
        day = datetime.datetime.strptime(match.group(1), "%Y%m%d").date()
        low, high = _day_bounds(day)
        end = (
            datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp() + _DAY
        )
        if end > now - retention_seconds:
            continue
        in_range = sa.and_(t.c.id >= low, t.c.id < high)
        running = conn.execute(
            sa.select(t.c.id).where(in_range, t.c.state.in_(_UNFINISHED)).limit(1)
        ).first()
        recent = conn.execute(
            sa.select(t.c.id).where(in_range, t.c.ended_at > now - retention_seconds).limit(1)
        ).first()
        if running is None and recent is None:
            conn.execute(sa.text(f"DROP TABLE {name}"))
            dropped += 1
    return dropped
