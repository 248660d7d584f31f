"""Cross-replica wake-ups on a SQL database: who tells a replica that something changed elsewhere.

Three kinds of change reach other replicas as `(kind, key)` notifications:
- `events`, execution id: a commit appended events (Watch streams re-read the store);
- `events`, instance id: a state machine instance's history grew (`Notifier` in the engine);
- `signal`, execution id: a signal or control request was stored (its owner delivers it).
(`slots`, the fleet scheduler's grants (storage/slots.py), shares the channel; a replica
with waiting rows polls for them every second anyway, so it needs no catching up here.)

PostgreSQL carries them on LISTEN/NOTIFY (channel `agentrun`; a commit's own transaction runs
`pg_notify`, see `notify_in`), held by one dedicated connection per store. A notification
sent while that connection is down is lost to it, so while it is down, and for one full pass
after it is back, the store reads what the notifications would have said from the tables
every OUTAGE_POLL_SECONDS (`_Outage`): executions and instances whose `last_sequence` moved,
signals not yet consumed. SQLite has no NOTIFY, yet several processes may share a file
(`agentrun run` beside `agentrun serve`): there the store finds other processes' new rows by
polling the tables (`SqliteNotifications`, sqlite_poll.py).
Listeners ignore repeats, so announcing a change twice is harmless; missing one is not.

Quiet writers (PostgreSQL). A NOTIFY costs its commit PostgreSQL's notification queue lock,
which serialises every notifying commit of the server until its WAL is flushed, and wakes every
LISTEN backend and its replica, this one included, for events it published itself. So while
no other replica listens (no LISTEN connection on the database but this store's own), the
execution and instance writers (pg_turns.py, pg_instances.py) run their statements without
the NOTIFY of the events they write: they are "quiet". Nothing else goes quiet (signals,
`notify`, the transaction's way). A replica that begins listening must still see every event:
- a writer's connection goes quiet (`PostgresDatabase.writer_presence`, every
  PRESENCE_SECONDS while this store's LISTEN is up, and when a writer connects) only holding
  the shared advisory lock QUIET_LOCK, taken before it reads who listens (pg_stat_activity,
  `application_name` LISTEN_APPLICATION): a replica that began listening before that read
  is seen, and it stays loud;
- a replica that begins listening (LISTEN on a new connection: at start, after a loss) sends
  `listen:` on the channel, then takes QUIET_LOCK exclusively for a moment: the writers that
  hear it go loud (`writers_loud`: their next statements notify, and they hand the lock back
  after the statement they run now), those that did not hear it do at their next presence
  check, which sees the new LISTEN connection. Once it has the lock, every statement any
  writer commits notifies, and it is `listening`: the catch-up passes (which run from the
  start and while LISTEN is down, below) make one more full pass, which reads what quiet
  writers committed before;
- a writer whose own LISTEN is down goes loud (it would not hear a replica begin).
A replica that stops while quiet (SIGSTOP, a VM pause) keeps its writers' sessions and so the
lock: a replica that begins listening meanwhile stays on its catch-up passes (events a second
or so late, none missed) until the quiet one resumes and hears it, or its sessions end.
A replica of an older version that begins listening sends no `listen:`: quiet writers see it
at their next presence check, and until then its Watch streams may miss what they commit.

`Notifications` is the channel as the store uses it; the database gives the one its dialect
needs (`SqlDatabase.notification_channel`): `PostgresNotifications` or `SqliteNotifications`
(sqlite_poll.py).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import ExecutionState

if TYPE_CHECKING:
    from agentrun.storage.sqldb import SqlDatabase

__all__ = [
    "CHANNEL",
    "LISTEN_APPLICATION",
    "OUTAGE_POLL_SECONDS",
    "PRESENCE_SECONDS",
    "QUIET_LOCK",
    "Notifications",
    "PostgresNotifications",
    "chunks",
]

CHANNEL = "agentrun"
# The application_name of the LISTEN connection (pg_stat_activity shows which backend it is).
LISTEN_APPLICATION = "agentrun-listen"
# How often, while LISTEN is down, a PostgreSQL store reads what notifications would have said.
OUTAGE_POLL_SECONDS = 1.0
# The LISTEN connection's reconnect delay: first, and at most (doubling in between).
RECONNECT_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
# A LISTEN connection silent this long is pinged: one dead without a FIN (a network
# partition) is found within PING_SECONDS + PING_TIMEOUT.
PING_SECONDS = 10.0
PING_TIMEOUT = 5.0
# An outage's first pass re-announces what ended up to this long before the loss was
# noticed: the time to notice it, and the clocks of other replicas (which write ended_at).
LOOKBACK_SECONDS = 60.0
# How often a PostgreSQL store whose LISTEN is up checks whether its writers may be quiet
# (no other replica listens) or must notify again (one that sent no `listen:` does).
PRESENCE_SECONDS = 5.0
# NOTIFY payloads must stay under PostgreSQL's 8000 bytes.
_PAYLOAD_BYTES = 7000

_UNFINISHED = [s.value for s in ExecutionState if not s.terminal]

# A replica that began listening says so (`listen:`), then waits for the quiet writers.
_HELLO = f"SELECT pg_notify('{CHANNEL}', 'listen:')"
_JOINED = "SELECT pg_advisory_xact_lock($1)"
# The advisory lock of quiet writers (shared) and of a replica that begins listening.
QUIET_LOCK = 7415002

Listener = Callable[[str, str], None]


def chunks(ids: Sequence[str], size: int = _PAYLOAD_BYTES) -> Iterator[str]:
    """Comma-joined ids in payloads of at most about `size` bytes."""
    current: list[str] = []
    length = 0
    for key in ids:
        if current and length + len(key) + 1 > size:
            yield ",".join(current)
            current, length = [], 0
        current.append(key)
        length += len(key) + 1
    if current:
        yield ",".join(current)


class Notifications(abc.ABC):
    """The notification channel of one store: `notify` sends, `listen` registers callbacks,
    `start` (at open, once there is a listener) begins receiving, `close` stops."""

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        # The keys someone in this process follows (`Store.watch`), where a channel asks.
        self._watched: Callable[[], Collection[str]] = _none

    def listen(self, callback: Listener) -> None:
        self._listeners.append(callback)
        if self._database.is_open:
            self.start()

    def watch(self, keys: Callable[[], Collection[str]]) -> None:
        self._watched = keys

    def start(self) -> None:
        """Starts receiving, if anyone listens and it has not started (fresh per open)."""
        if not self._listeners or self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(work, name=name) for name, work in self._receivers()]

    @abc.abstractmethod
    def _receivers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The tasks that receive (named), started by `start`."""

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def notify(self, kind: str, keys: str) -> None:
        """Sends `kind:keys` (comma-joined ids) to every replica."""
        database = self._database
        await database.transaction(lambda conn: database.notify_in(conn, kind, keys.split(",")))

    def stored_here(self, execution_id: str, seq: int) -> None:
        """The signal `seq` of `execution_id` was stored through this store and handed back
        to its caller, who gives it to the run here or calls `notify` (Engine.add_signal):
        a channel that would announce the row to this process may leave it out. PostgreSQL
        announces a signal only by `notify`, whose NOTIFY this process hears too."""

    def dispatch(self, kind: str, key: str) -> None:
        for callback in self._listeners:
            try:
                callback(kind, key)
            except Exception:
                continue


class PostgresNotifications(Notifications):
    """LISTEN on a connection of its own; catch-up passes while it is down (`_Outage`)."""

    def __init__(self, database: SqlDatabase) -> None:
        super().__init__(database)
        # Whether the LISTEN connection is up now (and the writers that were quiet before it
        # came up notify: see "Quiet writers"), and its backend's pid.
        self.listening = False
        self.listener_pid: int | None = None
        # Set when LISTEN is not up (from the start, and at each loss); the catch-up clears it.
        self._lost: asyncio.Event | None = None
        # Outage passes made (tests and diagnostics see that catching up happens).
        self.catch_up_passes = 0
        # Bumped whenever the writers must be loud (a replica began listening, this one's
        # LISTEN went down): a presence check that began before does not make them quiet.
        self._loud_since = 0
        # Set to check the writers' presence now (LISTEN came up, a writer connected).
        self._presence: asyncio.Event | None = None

    def _receivers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        self._lost = asyncio.Event()
        self._lost.set()
        self._presence = asyncio.Event()
        return [
            ("agentrun-pg-listen", self._listen_loop()),
            ("agentrun-pg-catch-up", self._catch_up_loop()),
            ("agentrun-pg-presence", self._presence_loop()),
        ]

    def writer_connected(self) -> None:
        """A writer connected (loud), or LISTEN came up: check at once whether the writers
        may be quiet."""
        if self._presence is not None:
            self._presence.set()

    def _loud(self) -> None:
        from agentrun.storage.sqldb_postgres import PostgresDatabase

        self._loud_since += 1
        if isinstance(self._database, PostgresDatabase):
            self._database.writers_loud()

    async def _presence_loop(self) -> None:
        """Makes the writers quiet while no other replica listens, loud when one does, every
        PRESENCE_SECONDS and when woken (`_presence`), while this store's LISTEN is up."""
        from agentrun.storage.sqldb_postgres import PostgresDatabase

        database = self._database
        assert isinstance(database, PostgresDatabase) and self._presence is not None
        while not database.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._presence.wait(), PRESENCE_SECONDS)
            self._presence.clear()
            pid, since = self.listener_pid, self._loud_since
            if not self.listening or pid is None:
                continue

            def still(pid: int = pid, since: int = since) -> bool:
                return self.listening and self.listener_pid == pid and self._loud_since == since

            try:
                await database.writers_presence(pid, still)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue

    async def close(self) -> None:
        await super().close()
        self.listening = False

    async def notify(self, kind: str, keys: str) -> None:
        """One autocommit statement, one round trip (a transaction took three: BEGIN,
        `pg_notify`, COMMIT); the state machine's Notifier sends after each commit."""
        from agentrun.storage.sqldb_postgres import PostgresDatabase

        database = self._database
        assert isinstance(database, PostgresDatabase)
        await database.notify_now(kind, keys.split(","))

    def _on_payload(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        kind, _, keys = payload.partition(":")
        if kind == "listen":  # a replica began listening: the writers notify
            if pid != self.listener_pid:
                self._loud()
            return
        for key in keys.split(","):
            self.dispatch(kind, key)

    async def _listen_loop(self) -> None:
        """Holds one LISTEN connection, reconnecting with backoff; each loss sets `_lost`."""
        import asyncpg

        dsn = self._database.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = RECONNECT_SECONDS
        while not self._database.closing:
            conn = None
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=5, server_settings={"application_name": LISTEN_APPLICATION}
                )
                gone = asyncio.Event()
                conn.add_termination_listener(lambda _conn, gone=gone: gone.set())
                self.listener_pid = conn.get_server_pid()
                await conn.add_listener(CHANNEL, self._on_payload)
                # Quiet writers hear this and notify; once they all do, this has the lock.
                await conn.execute(_HELLO)
                await conn.execute(_JOINED, QUIET_LOCK)
                self.listening = True
                self.writer_connected()  # check the writers' presence now
                delay = RECONNECT_SECONDS
                while not self._database.closing and not conn.is_closed():
                    try:
                        await asyncio.wait_for(gone.wait(), PING_SECONDS)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            finally:
                self._went_down()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            if not self._database.closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _went_down(self) -> None:
        self.listening = False
        self._loud()
        if self._lost is not None:
            self._lost.set()

    async def _catch_up_loop(self) -> None:
        """While LISTEN is down, and for one full pass after it is back (what was sent before
        it came back is read then), announces what changed in the tables."""
        lost = self._lost
        assert lost is not None
        outage: _Outage | None = None
        while not self._database.closing:
            if outage is None:
                await lost.wait()
                outage = _Outage(since=time.time() - LOOKBACK_SECONDS)
            lost.clear()
            up_before = self.listening
            try:
                found = await outage.scan(self._database)
            except asyncio.CancelledError:
                raise
            except Exception:
                passed = False  # the database is down too: try again at the next pass
            else:
                passed = True
                self.catch_up_passes += 1
                for kind, key in found:
                    self.dispatch(kind, key)
            if passed and up_before and not lost.is_set():
                outage = None  # LISTEN was up for the whole pass: notifications carry on
                continue
            await asyncio.sleep(OUTAGE_POLL_SECONDS)


def _none() -> Collection[str]:
    """No key watched (until `watch` says which)."""
    return ()


class _Outage:
    """What the notifications of one LISTEN outage would have said, read from the tables.

    Each pass reads the `last_sequence` of every unfinished execution and active instance,
    and of those that ended since the previous pass began (the first: since the loss was
    noticed), less LOOKBACK_SECONDS (`ended_at` is indexed), and the unconsumed signals of
    unfinished executions; it returns what differs from the previous pass (the first:
    everything it read). An execution's or instance's `last_sequence` is the sequence of
    its newest event or entry (a batch that appends them carries it; Watch streams rely on
    it too), so it moves exactly when a notification would have been sent. What it keeps is what the last pass read: bounded by what is
    running and what ended in the last LOOKBACK_SECONDS or so."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.sequences: dict[tuple[str, str], int] = {}
        self.signals: set[tuple[str, int]] = set()

    async def scan(self, database: SqlDatabase) -> list[tuple[str, str]]:
        started = time.time()
        e, i, s = db.executions, db.sm_instances, db.signals
        queries = {
            "execution": sa.select(e.c.id, e.c.last_sequence).where(
                sa.or_(e.c.state.in_(_UNFINISHED), e.c.ended_at >= self.since)
            ),
            "instance": sa.select(i.c.id, i.c.last_sequence).where(
                sa.or_(i.c.state == "ACTIVE", i.c.ended_at >= self.since)
            ),
        }
        found: list[tuple[str, str]] = []
        sequences: dict[tuple[str, str], int] = {}
        for aggregate, query in queries.items():
            for row in await database.read(query):
                key, sequence = str(row[0]), int(row[1])
                sequences[(aggregate, key)] = sequence
                if self.sequences.get((aggregate, key)) != sequence:
                    found.append(("events", key))
        pending = (
            sa.select(s.c.execution_id, s.c.seq)
            .join(e, e.c.id == s.c.execution_id)
            .where(e.c.state.in_(_UNFINISHED), s.c.consumed_by.is_(None))
        )
        signals = {(str(row[0]), int(row[1])) for row in await database.read(pending)}
        found += [("signal", key) for key in sorted({key for key, _ in signals - self.signals})]
        self.sequences, self.signals = sequences, signals
        self.since = started - LOOKBACK_SECONDS
        return found
