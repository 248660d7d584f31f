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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError
from agentrun.storage.notifications import (
    CHANNEL,
    LISTEN_APPLICATION,
    QUIET_LOCK,
    Notifications,
    PostgresNotifications,
    chunks,
)
from agentrun.storage.records import ExecutionState
from agentrun.storage.sqldb import DirectWriter, SqlDatabase, store_errors

if TYPE_CHECKING:
    import asyncpg

    from agentrun.storage.pg_instances import InstanceWriter

__all__ = ["WRITER_APPLICATION", "PostgresDatabase"]

T = TypeVar("T")

# SQLSTATEs of a transaction PostgreSQL rolled back that may simply be run again.
_RETRIED = ("40P01", "40001")  # deadlock detected, serialization failure
_ATTEMPTS = 3
# SQLSTATE classes of a lost or refused connection (08), a server going away (57: admin or
# crash shutdown) or out of resources (53): no fault of the statement's.
_UNAVAILABLE = ("08", "57", "53")
# The application_name of the execution writer's connection (pg_stat_activity shows it);
# the state machine instances' writer has its own connection, named with "-instances".
WRITER_APPLICATION = "agentrun-writer"


@dataclass
class _Writer:
    """One direct writer's connection (pg_turns.py), its prepared statements and its lock."""

    application: str
    connection: asyncpg.Connection | None = None
    lock: asyncio.Lock | None = None
    prepared: dict[str, asyncpg.prepared_stmt.PreparedStatement] = field(default_factory=dict)
    # Quiet: statements run their quiet variants (no NOTIFY of the events they write), as no
    # other replica listens; only while `locked`: the connection holds the shared QUIET_LOCK
    # (notifications.py, "Quiet writers").
    quiet: bool = False
    locked: bool = False


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
        # The direct writers' own connections (pg_turns.py): execution turns and instance
        # commits, each on one of its own (connected on first use), so neither waits for the other.
        self._writers = {
            "executions": _Writer(WRITER_APPLICATION),
            "instances": _Writer(f"{WRITER_APPLICATION}-instances"),
        }
        self._unquieting: set[asyncio.Task[None]] = set()
        self._channel: PostgresNotifications | None = None

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
        # 26 + 1 for the execution writer + 1 for the instance writer + 2 for leases + 1
        # LISTEN: 31 connections at most per replica, as documented.
        self._engine = create_async_engine(self.url, pool_size=10, max_overflow=16, **options)
        # Lease renewals and claims on connections of their own: a burst of reads and
        # commits that holds every pooled connection must not make a live replica's
        # renewal wait until its leases expired.
        self._lease_engine = create_async_engine(self.url, pool_size=1, max_overflow=1, **options)
        # Single-statement reads need no BEGIN/ROLLBACK round trips.
        self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        if self._unquieting:  # each hands a lock back after one statement at most
            _done, late = await asyncio.wait(set(self._unquieting), timeout=1)
            for task in late:
                task.cancel()
        for name in self._writers:
            await self.drop_writer_connection(name)
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

    def instance_writer(self) -> InstanceWriter | None:
        """State machine instance commits in one round trip each (pg_instances.py)."""
        from agentrun.storage.pg_instances import InstanceWriter

        return InstanceWriter(self)

    async def writer_fetchrow(
        self,
        sql: str,
        args: Sequence[Any],
        *,
        writer: str = "executions",
        quiet_sql: str | None = None,
    ) -> asyncpg.Record:
        """Runs `sql`, prepared once, on the `writer`'s own connection (connected on first
        use, with the pool's timeout and idle-in-transaction limit), one caller at a time;
        `quiet_sql` instead (the same writes without their NOTIFY) while that connection is
        quiet (`writer_presence`). A lost connection or a server going away: StoreError (the
        statement may or may not have committed) and a new connection next time; an error
        PostgreSQL answers for the statement itself (nothing written) passes through as
        asyncpg raised it."""
        return await self._on_writer(writer, sql, args, quiet_sql)

    async def writer_prepare(self, sql: str, *, writer: str) -> None:
        """Connects `writer` and prepares `sql` ahead of its first use, so that the first
        commit costs one round trip, not a connection's set-up as well."""
        await self._on_writer(writer, sql, None)

    async def _on_writer(
        self, writer: str, sql: str, args: Sequence[Any] | None, quiet_sql: str | None = None
    ) -> Any:
        """`sql` (`quiet_sql` while the connection is quiet) prepared on `writer`'s
        connection, and run with `args` (None: only prepared)."""
        if self._engine is None or self.closing:
            raise StoreError("the store is not open")
        import asyncpg

        state = self._writers[writer]
        if state.lock is None:
            state.lock = asyncio.Lock()
        async with state.lock:
            try:
                conn = state.connection
                if conn is None or conn.is_closed():
                    conn = await self._connect_writer(state)
                if state.quiet and quiet_sql is not None:
                    sql = quiet_sql  # decided under the lock: see `writers_loud`
                prepared = state.prepared.get(sql)
                if prepared is None:
                    prepared = state.prepared[sql] = await conn.prepare(sql)
                return None if args is None else await prepared.fetchrow(*args)
            except asyncio.CancelledError:
                # Mid-statement: the connection's state is unknown, a new one next time.
                self._drop_writer(state, terminate=True)
                raise
            except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
                self._drop_writer(state, terminate=True)
                raise StoreError(f"database unavailable: {exc}") from exc
            except asyncpg.PostgresError as exc:
                if str(getattr(exc, "sqlstate", ""))[:2] in _UNAVAILABLE:
                    self._drop_writer(state, terminate=True)
                    raise StoreError(f"database unavailable: {exc}") from exc
                raise

    async def _connect_writer(self, state: _Writer) -> asyncpg.Connection:
        import asyncpg

        # A new session holds no QUIET_LOCK: loud, also when the old one ended without
        # `_drop_writer` (the server ended it: its lock went with it).
        state.prepared, state.quiet, state.locked = {}, False, False
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        state.connection = await asyncpg.connect(
            dsn,
            timeout=10,
            server_settings={
                "idle_in_transaction_session_timeout": str(self._idle_in_transaction_ms),
                "application_name": state.application,
            },
        )
        if self._channel is not None:
            self._channel.writer_connected()
        return state.connection

    @staticmethod
    def _drop_writer(state: _Writer, *, terminate: bool = False) -> asyncpg.Connection | None:
        # Its session's shared lock ends with it; a new connection starts loud.
        conn, state.connection, state.prepared = state.connection, None, {}
        state.quiet = state.locked = False
        if conn is not None and terminate and not conn.is_closed():
            conn.terminate()
        return conn

    async def drop_writer_connection(self, writer: str = "executions") -> None:
        """Closes a direct writer's connection (the store closes; tests cut it)."""
        conn = self._drop_writer(self._writers[writer])
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=1)
            except Exception:
                conn.terminate()

    async def writers_presence(self, listener_pid: int, still: Callable[[], bool]) -> None:
        """`writer_presence` of each writer."""
        for writer in self._writers:
            await self.writer_presence(writer, listener_pid, still)

    async def writer_presence(
        self, writer: str, listener_pid: int, still: Callable[[], bool]
    ) -> bool | None:
        """Makes `writer`'s connection quiet when no other replica listens (no LISTEN
        connection of this database but `listener_pid`, this store's own), loud when one does
        (notifications.py, "Quiet writers"); whether it is quiet now, None when it is not
        connected. Going quiet takes the shared QUIET_LOCK first and reads who listens after:
        a replica that began listening since holds the lock's exclusive request behind it
        until this connection is loud again. `still()` False at the end (a replica said it
        began listening meanwhile): stays loud."""
        state = self._writers[writer]
        if state.lock is None or state.connection is None:
            return None
        async with state.lock:
            conn = state.connection
            if conn is None or conn.is_closed():
                return None
            try:
                if not state.locked:
                    if await conn.fetchval(_OTHERS, LISTEN_APPLICATION, listener_pid):
                        return False  # others listen: no lock taken (replicas in a fleet)
                    state.locked = bool(await conn.fetchval(_TRY_QUIET, QUIET_LOCK))
                    if not state.locked:
                        return False  # a replica is joining: it waits for the loud to go
                # Read (again) once the lock is held: a replica that began listening before
                # this read is seen, one that begins after waits for this lock.
                others = await conn.fetchval(_OTHERS, LISTEN_APPLICATION, listener_pid)
                if others == 0 and still():
                    state.quiet = True
                    return True
                state.quiet = False
                await conn.fetchval(_LOUD, QUIET_LOCK)
                state.locked = False
                return False
            except asyncio.CancelledError:
                self._drop_writer(state, terminate=True)
                raise
            except Exception:
                # The lock's state is unknown: a new connection (loud) next time.
                self._drop_writer(state, terminate=True)
                return None

    def writers_loud(self) -> None:
        """Every quiet writer notifies again from its next statement on, and hands its shared
        QUIET_LOCK back after the statement it runs now (a task of its own): a replica began
        listening, or this store's own LISTEN is down (it would not hear one begin)."""
        for state in self._writers.values():
            if state.quiet and state.connection is not None:
                state.quiet = False
                task = asyncio.get_running_loop().create_task(self._unquiet(state))
                self._unquieting.add(task)
                task.add_done_callback(self._unquieting.discard)

    async def _unquiet(self, state: _Writer) -> None:
        conn = state.connection
        assert state.lock is not None
        async with state.lock:
            if conn is not state.connection or state.quiet or not state.locked:
                return  # dropped meanwhile (its lock went with it), handed back, or quiet again
            assert conn is not None
            try:
                await conn.fetchval(_LOUD, QUIET_LOCK)
                state.locked = False
            except Exception:
                self._drop_writer(state, terminate=True)

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
        self._channel = PostgresNotifications(self)
        return self._channel

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        self.require_open()
        return await self.transaction(
            lambda conn: _maintain_partitions(conn, now, retention_seconds)
        )


_DAY = 86_400
_PARTITION = re.compile(r"^events_d(\d{8})\Z")
_UNFINISHED = [s.value for s in ExecutionState if not s.terminal]

_TRY_QUIET = "SELECT pg_try_advisory_lock_shared($1)"
_LOUD = "SELECT pg_advisory_unlock_shared($1)"
# LISTEN connections of agentrun stores on this database but the one named.
_OTHERS = """SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND pid <> $2"""


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
