"""SQLite's notification poller with many watched keys (`_RowPoll`, storage/sqlite_poll.py):
what a pass reads is what was committed since the last one, never the watched keys that did
not change, so an event of the 5,000th watched execution is announced by the first pass after
its commit; a burst of rows is read in bounded slices; a table whose rowids went back (a
VACUUM renumbered them) has every watched key announced rather than its new rows missed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage import sqlite_poll
from agentrun.storage.sql import SqlStore

_EXECUTION = (
    "INSERT INTO executions (id, tenant, workflow, version, state, created_at, last_sequence)"
    " VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0, 0)"
)


def _events(conn: sqlite3.Connection, keys: list[str]) -> None:
    """One commit of an event of each of `keys`, as a store's commit writes one (another
    process's commit, on a connection of its own)."""
    conn.execute("BEGIN")
    for key in keys:
        (sequence,) = conn.execute(
            "SELECT last_sequence + 1 FROM executions WHERE id = ?", (key,)
        ).fetchone()
        conn.execute(
            "INSERT INTO events (execution_id, sequence, type, time) VALUES (?, ?, 'x', 1.0)",
            (key, sequence),
        )
        conn.execute("UPDATE executions SET last_sequence = ? WHERE id = ?", (sequence, key))
    conn.execute("COMMIT")


async def _migrated(path: Path, keys: list[str]) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(_EXECUTION, [(key,) for key in keys])
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_one_pass_announces_an_event_of_the_5000th_watched_execution(
    tmp_path: Path,
) -> None:
    """A console tab per tenant: 5,000 executions watched here. An event another process
    commits to the last of them is announced by the first pass after the commit, and that pass
    runs one read, as with one key watched. (The poller read the last sequence of at most
    2,000 watched keys a pass: the 5,000th was announced by the third pass after the commit,
    and at 10,000 watched up to two sweeps of five passes, ~2 s, after it.)"""
    path = tmp_path / "watched.db"
    keys = [f"ex-{n:05d}" for n in range(5000)]
    await _migrated(path, [*keys, "unwatched"])
    reader = SqlStore(f"sqlite+aiosqlite:///{path}")
    await reader.open()
    side = sqlite3.connect(path, isolation_level=None)
    heard: list[tuple[str, str]] = []
    watched = dict.fromkeys(keys).keys()  # as the hub's subscriptions
    reader.watch(lambda: watched)
    reader.listen(lambda kind, key: heard.append((kind, key)))
    try:
        channel = reader.notifications
        assert isinstance(channel, sqlite_poll.SqliteNotifications)
        await _until(lambda: channel.receiving, "the poller's marks")
        conn = reader.database.poll_connection()  # type: ignore[attr-defined]
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        # The commit is made on the loop's thread, between two passes (a pass runs at once).
        _events(side, [keys[-1], "unwatched"])
        passes = channel.passes
        await _until(lambda: channel.passes > passes, "the next pass")
        assert heard == [("events", keys[-1])]
        reads = [s for s in statements if s != "PRAGMA data_version"]
        assert len(reads) == 1, reads
    finally:
        side.close()
        await reader.close()


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """A migrated file with executions ex-0 ... ex-9 and `unwatched`: a writer's connection
    (another process) and the poller's."""
    path = tmp_path / "poll.db"
    asyncio.run(_migrated(path, [*(f"ex-{n}" for n in range(10)), "unwatched"]))
    writer = sqlite3.connect(path, isolation_level=None)
    reader = sqlite3.connect(path, isolation_level=None)
    yield writer, reader
    writer.close()
    reader.close()


def test_a_burst_is_read_in_slices_each_pass_bounded(
    files: tuple[sqlite3.Connection, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass reads at most _ROWS_PER_PASS rowids of a table: a burst of commits is read over
    the next passes (the poller runs them at the loop's next turns), with no further commit
    needed, and every watched key of it is announced; then a pass reads nothing again."""
    monkeypatch.setattr(sqlite_poll, "_ROWS_PER_PASS", 3)
    writer, reader = files
    keys = [f"ex-{n}" for n in range(10)]
    poll = sqlite_poll._RowPoll()
    poll.start(reader)
    _events(writer, [*keys, "unwatched"])  # rows 1 to 11
    heard: list[str] = []
    passes = 0
    while passes == 0 or poll.behind:
        found = poll.new_rows(reader, set(), keys)
        assert len(found) <= 3
        heard += [key for kind, key in found if kind == "events"]
        passes += 1
    assert passes == 4 and sorted(heard) == keys
    statements: list[str] = []
    reader.set_trace_callback(statements.append)
    assert poll.new_rows(reader, set(), keys) == {}
    assert statements == ["PRAGMA data_version"]


def test_rowids_that_went_back_announce_every_watched_key(
    files: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """SQLite gives a new row the highest rowid + 1: rows deleted from a table's end (what
    event retention never does: it keeps the newest row) or renumbered by a VACUUM hand out
    rowids the poller's mark already passed. A pass that finds a table ending below its mark
    cannot tell which rows are new: it announces every watched key once, then goes on from
    where the table ends."""
    writer, reader = files
    watched = ["ex-1", "ex-2", "ex-3"]
    poll = sqlite_poll._RowPoll()
    poll.start(reader)
    _events(writer, ["ex-1", "unwatched", "unwatched"])
    assert poll.new_rows(reader, set(), watched) == {("events", "ex-1"): None}
    writer.execute("DELETE FROM events WHERE execution_id = 'unwatched'")
    _events(writer, ["ex-2"])  # the rowid of the first of those deleted, again
    assert set(poll.new_rows(reader, set(), watched)) == {("events", key) for key in watched}
    _events(writer, ["ex-3"])
    assert poll.new_rows(reader, set(), watched) == {("events", "ex-3"): None}


def test_events_are_not_read_while_no_key_is_watched(
    files: tuple[sqlite3.Connection, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events would wake only a watched key: while none is, a pass reads no event row (a burst
    is passed over in that one pass, no slices left behind) and only the signals' rows; the
    events committed once a key is watched are announced as ever."""
    monkeypatch.setattr(sqlite_poll, "_ROWS_PER_PASS", 3)
    writer, reader = files
    poll = sqlite_poll._RowPoll()
    poll.start(reader)
    _events(writer, [f"ex-{n}" for n in range(10)])  # rows 1 to 10
    statements: list[str] = []
    reader.set_trace_callback(statements.append)
    assert poll.new_rows(reader, set(), ()) == {}
    assert not poll.behind
    assert not any("FROM events NOT INDEXED" in sql for sql in statements)
    assert any("FROM signals NOT INDEXED" in sql for sql in statements)
    _events(writer, ["ex-4", "unwatched"])
    assert poll.new_rows(reader, set(), ["ex-4"]) == {("events", "ex-4"): None}
    assert not poll.behind
