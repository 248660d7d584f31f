"""SQLite's notification channel: `SqliteNotifications` finds the rows other processes
committed by polling the tables by rowid, and announces them as PostgreSQL's LISTEN would
(notifications.py holds the channel's common part and PostgreSQL's).

SQLite has no NOTIFY, yet several processes may share a file (`agentrun run` beside `agentrun
serve`): there new rows are found by rowid every SQLITE_POLL_SECONDS (`events` and
`sm_history` are rowid tables again since 0025), but a signal stored through the store itself,
which reaches this process as on PostgreSQL: by `notify` only (`stored_here`); new events and
instance history are announced for the executions and instances someone in this process
follows (`watch`: the engine's Watch streams and waits, the hub's subscriptions, the only ones
an `events` notification wakes). A pass reads what was committed since the last, so it finds
an event of the 10,000th key watched as soon as one of the first (from 0022 and 0024 until 0025
those tables had no rowid and a pass read the last sequence of at most 2,000 watched keys: up
to two sweeps of five passes, ~2 s, at 10,000).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from agentrun.storage import schema as db
from agentrun.storage.notifications import Notifications

if TYPE_CHECKING:
    from agentrun.storage.sqldb import SqlDatabase

__all__ = ["SQLITE_POLL_SECONDS", "SqliteNotifications"]

# How often a SQLite store looks for rows other processes wrote.
SQLITE_POLL_SECONDS = 0.2


class SqliteNotifications(Notifications):
    """No NOTIFY: new rows found by rowid (`_poll_rows`): events and instance history of the
    watched keys, signals; `notify` sends nothing to other processes (they poll the rows), and
    tells this one only of signals. Rows are announced from the poller's first read of where
    each table ends (`receiving` once it has read them): what was committed before that is not
    announced.

    A pass costs a few microseconds on the event loop's thread: one `PRAGMA data_version` on
    a read connection of its own (`SqliteDatabase.poll_connection`), which says whether any
    other connection committed since the last read, and only then one prepared statement,
    `_NEW_ROWS`, which seeks each table's new rows by rowid (SQLAlchemy reads through the
    pool's threads cost about 2.5 ms of CPU a pass, every SQLITE_POLL_SECONDS, idle or not):
    at most _ROWS_PER_PASS rowids of each table, the rest at the loop's next turns."""

    def __init__(self, database: SqlDatabase) -> None:
        super().__init__(database)
        self.receiving = False
        # Passes made since the start (tests wait for one to have read past a commit).
        self.passes = 0
        # Signals stored here since the last pass (`stored_here`), by (execution id, seq):
        # the pass leaves their rows out. And the `signal` keys `notify` sent since then,
        # which the pass announces here (as this process's LISTEN hears its own NOTIFY).
        self._own_signals: set[tuple[str, int]] = set()
        self._told: dict[str, None] = {}

    def _receivers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [("agentrun-sqlite-poll", self._poll_rows())]

    async def close(self) -> None:
        await super().close()
        self.receiving = False

    async def notify(self, kind: str, keys: str) -> None:
        """Other processes find the rows by polling; a `signal` is announced to this one at
        the next pass (Engine.add_signal sends it for a run it did not hand the signal to:
        one that runs elsewhere, or one being resumed here meanwhile)."""
        if kind == "signal" and self._tasks:
            self._told.update(dict.fromkeys(keys.split(",")))

    def stored_here(self, execution_id: str, seq: int) -> None:
        if self._tasks:  # a pass will clear it
            self._own_signals.add((execution_id, seq))

    async def _poll_rows(self) -> None:
        """New rows, announced as PostgreSQL's notifications would be: `events` for
        execution events and instance history (the watched keys'), `signal` for signals. This process's own
        events and history are announced too (PostgreSQL's commits NOTIFY them to every
        replica, this one included; Watch streams re-read on them), its own signals only as
        PostgreSQL announces them: through `notify`."""
        from agentrun.storage.sqldb_sqlite import SqliteDatabase

        database = self._database
        assert isinstance(database, SqliteDatabase)
        poll = _RowPoll()
        while not database.closing:
            try:
                if not poll.started:
                    poll.start(database.poll_connection())
                    self._own_signals.clear()
                    self.receiving = True
                # Rows left for the next slice are read at the loop's next turn.
                await asyncio.sleep(0 if poll.behind else SQLITE_POLL_SECONDS)
                # Rows of the signals stored here before now are read now, or were read by an
                # earlier pass: after this pass, none can come up again.
                own, self._own_signals = self._own_signals, set()
                found = poll.new_rows(database.poll_connection(), own, self._watched())
                told, self._told = self._told, {}
                self.passes += 1
                for kind, key in found:
                    self.dispatch(kind, key)
                for key in told:
                    if ("signal", key) not in found:
                        self.dispatch("signal", key)
            except asyncio.CancelledError:
                raise
            except Exception:
                database.drop_poll_connection()
                poll.version = None
                await asyncio.sleep(SQLITE_POLL_SECONDS)


_POLLED = (
    ("events", db.events, db.events.c.execution_id),
    ("events", db.sm_history, db.sm_history.c.instance_id),
    ("signal", db.signals, db.signals.c.execution_id),
)
# Where each polled table ends (its highest rowid), in _POLLED's order. A mark holds only
# while rowids never go back: SQLite gives a new row the highest rowid + 1, so whatever
# deletes rows of these tables must keep each one's newest row (event retention does,
# `SqliteDatabase.maintain_events`; nothing deletes history or signals). A table found to end
# below its mark (a VACUUM renumbered its rowids) has every watched key announced once.
_ENDS = "SELECT " + ", ".join(
    f"(SELECT coalesce(max(rowid), 0) FROM {table.name})" for _kind, table, _key in _POLLED
)
# At most this many rowids of each table read a pass: a burst of commits (a bulk of starts,
# a process catching up) is read in slices of this size, one a loop turn (~0.6 µs a row on
# the loop's thread: ~1.2 ms a table), the next at the loop's next turn.
_ROWS_PER_PASS = 2000
# The rows of each table in (mark, mark + _ROWS_PER_PASS] (two parameters each, in _POLLED's
# order): (the table's index, the key, 0, 0), events and history one row each (deduplicated
# here: SQLite's GROUP BY sorted them in a temporary b-tree, twice the CPU); signals one row
# each, with their rowid and seq (`stored_here`), -1 for one consumed already (applied: a turn
# stored it with its effect, or its run took it since); then, in the same snapshot, where
# each table ends (-1, the table's index, its highest rowid, 0). A rowid range is a seek, a
# table's end one too; the statement is prepared once (sqlite3's statement cache).


def _new_rows(read: Sequence[int]) -> str:
    """`_NEW_ROWS` for the tables of `read` (indexes into _POLLED; the rowid bounds of each, in
    that order), every table's end read all the same."""
    return " UNION ALL ".join(
        [
            f"SELECT {index}, {key.name}, rowid, CASE WHEN consumed_by IS NULL THEN seq ELSE -1 END"
            f" FROM {table.name} NOT INDEXED WHERE rowid > ? AND rowid <= ?"
            if table is db.signals
            else f"SELECT {index}, {key.name}, 0, 0 FROM {table.name} NOT INDEXED"
            f" WHERE rowid > ? AND rowid <= ?"
            for index, (_kind, table, key) in enumerate(_POLLED)
            if index in read
        ]
        + [
            f"SELECT -1, {index}, coalesce(max(rowid), 0), 0 FROM {table.name}"
            for index, (_kind, table, _key) in enumerate(_POLLED)
        ]
    )


_ALL = tuple(range(len(_POLLED)))
_NEW_ROWS = _new_rows(_ALL)
# While no key is watched here, events and history rows would announce nothing: a pass reads
# the signals' rows only, and the other tables' marks move to their ends. An engine nobody
# Watches (step_floor.py's chain: its runs' waits are in the process) read every row of its
# own events, ~3 a chain step, 2.6 % of its loop's CPU (py-spy, /dev/shm, 7 Dec 2026).
_SIGNALS_ONLY = tuple(index for index, polled in enumerate(_POLLED) if polled[0] == "signal")
_NEW_SIGNALS = _new_rows(_SIGNALS_ONLY)


class _RowPoll:
    """The poller's marks (each polled table's highest rowid read), and the `data_version`
    its connection showed before the last read (None: read at the next pass).

    A pass reads the rows past the marks, so what it costs grows with what was committed
    since the last one, never with how many keys are watched: the watched keys whose events
    or history grew are found in one pass however many there are (the last sequence of each
    watched key, read by primary key before, cost ~1.2 µs a key: 2,000 read a pass at most,
    and a commit reached the watcher of the 10,000th within two sweeps of five passes)."""

    def __init__(self) -> None:
        self.marks: list[int] = []
        self.version: tuple[sqlite3.Connection, int] | None = None
        # Rows past a mark remain that this pass did not read (_ROWS_PER_PASS): read next.
        self.behind = False

    @property
    def started(self) -> bool:
        return bool(self.marks)

    def start(self, conn: sqlite3.Connection) -> None:
        self.version = (conn, _data_version(conn))
        self.marks = [int(end) for end in conn.execute(_ENDS).fetchall()[0]]
        self.behind = False

    def new_rows(
        self,
        conn: sqlite3.Connection,
        own_signals: set[tuple[str, int]],
        watched: Collection[str] = (),
    ) -> dict[tuple[str, str], None]:
        """What was committed past the marks, each key once: `events` of the watched
        executions and instances (the only ones it wakes, `Store.watch`), `signal` but those
        in `own_signals`. Nothing read if no other connection committed since the last read
        and none is left behind (the version is taken before the read: a commit during it
        shows at the next pass)."""
        version = (conn, _data_version(conn))
        found: dict[tuple[str, str], None] = {}
        if version == self.version and not self.behind:
            return found
        self.version = version
        marks = self.marks
        sql, read = (_NEW_ROWS, _ALL) if watched else (_NEW_SIGNALS, _SIGNALS_ONLY)
        params = [
            bound for index in read for bound in (marks[index], marks[index] + _ROWS_PER_PASS)
        ]
        ends: dict[int, int] = {}
        for index, key, rowid, seq in conn.execute(sql, params).fetchall():
            if index < 0:
                ends[int(key)] = int(rowid)
            elif _POLLED[index][0] == "signal":
                if seq != -1 and not (seq and (key, seq) in own_signals):
                    found[("signal", str(key))] = None
            elif key in watched:
                found[("events", str(key))] = None
        self.behind = False
        for index, end in ends.items():
            if end < marks[index]:  # renumbered: no rowid says what is new
                if _POLLED[index][0] == "events":
                    found.update(dict.fromkeys([("events", str(key)) for key in watched]))
                marks[index] = end
            elif end > marks[index] + _ROWS_PER_PASS and index in read:
                marks[index] += _ROWS_PER_PASS
                self.behind = True
            else:
                marks[index] = end
        return found


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchall()[0][0])
