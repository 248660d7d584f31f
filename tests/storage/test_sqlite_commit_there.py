"""SQLite group commits of turns on a busy loop: the statements on the loop's thread, the
COMMIT in the writer thread (`SqliteDatabase._written_here`, `_committed_there`). The group's
outcome comes once it is durable, a failed COMMIT writes nothing, a caller cancelled during
its COMMIT leaves it committed, and another process's write lock sends the whole transaction
to the thread, where it waits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage import sqldb_sqlite
from agentrun.storage.sql import SqlStore


@pytest.fixture
async def database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[sqldb_sqlite.SqliteDatabase]:
    # Groups of three turns, never written whole on the loop's thread (INLINE_ITEMS), however
    # fast or slow this machine's disk is today.
    monkeypatch.setattr(sqldb_sqlite, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqldb_sqlite, "INLINE_SLOW_SECONDS", 3600.0)
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'there.db'}")
    await store.open()
    db = store.database
    assert isinstance(db, sqldb_sqlite.SqliteDatabase)
    await db.transaction(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)"))
    try:
        yield db
    finally:
        await store.close()


def _insert(x: int) -> Any:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (x) VALUES (?)", (x,))
        return x

    return work


async def _rows(db: sqldb_sqlite.SqliteDatabase) -> list[int]:
    return [r[0] for r in await db.read_now(sqldb_sqlite.sa.text("SELECT x FROM t ORDER BY x"))]


@contextmanager
def _commits_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool]]]:
    """Which thread ran each transaction's statements and each COMMIT of an open one: (what,
    on the loop's thread)."""
    seen: list[tuple[str, bool]] = []
    run, commit = sqldb_sqlite.SqliteDatabase._run, sqldb_sqlite.SqliteDatabase._commit

    def recorded_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("statements", threading.current_thread() is threading.main_thread()))
        return run(self, *args, **kwargs)

    def recorded_commit(self: Any) -> float:
        seen.append(("commit", threading.current_thread() is threading.main_thread()))
        return commit(self)

    monkeypatch.setattr(sqldb_sqlite.SqliteDatabase, "_run", recorded_run)
    monkeypatch.setattr(sqldb_sqlite.SqliteDatabase, "_commit", recorded_commit)
    yield seen


async def test_a_group_of_turns_is_written_on_the_loop_and_committed_in_the_thread(
    database: sqldb_sqlite.SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group too large to write whole on the loop's thread: its statements there (no GIL
    hand-off per statement), its COMMIT in the writer thread; the answer once committed."""
    with _commits_seen(monkeypatch) as seen:
        assert await database.turn_transaction(_insert(1), items=3) == 1
    assert seen == [("statements", True), ("commit", False)]
    assert await _rows(database) == [1]
    # A group the thread must write whole (not a turn) still goes there whole.
    with _commits_seen(monkeypatch) as seen:
        await database.group_transaction(
            lambda conn: conn.exec_driver_sql("INSERT INTO t (x) VALUES (2)"), items=3
        )
    assert seen == [("statements", False)]
    assert await _rows(database) == [1, 2]


async def test_a_commit_that_fails_in_the_thread_writes_nothing(
    database: sqldb_sqlite.SqliteDatabase,
) -> None:
    """A COMMIT that fails raises sqlite3's error (the turn writer then sends the group the
    transaction's way), its statements rolled back; the next transaction starts clean."""

    class FailingCommit:
        def __init__(self, cursor: sqlite3.Cursor) -> None:
            self.cursor = cursor

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.cursor.execute(sql, *args)

    assert database._sync_cursor is not None  # the fixture's CREATE TABLE opened it
    database._sync_cursor = FailingCommit(database._sync_cursor)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await database.turn_transaction(_insert(1), items=3)
    assert await _rows(database) == []
    assert await database.turn_transaction(_insert(1), items=3) == 1
    assert await database.turn_transaction(_insert(2), items=1) == 2
    assert await _rows(database) == [1, 2]


async def test_a_caller_cancelled_during_its_commit_leaves_it_committed(
    database: sqldb_sqlite.SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT of an open transaction is never dropped: a caller that stops waiting
    leaves it to finish, and transactions after it wait for it (on either thread)."""
    commit = sqldb_sqlite.SqliteDatabase._commit
    entered, release = threading.Event(), threading.Event()

    def held(self: sqldb_sqlite.SqliteDatabase) -> float:
        entered.set()
        release.wait(30)
        return commit(self)

    monkeypatch.setattr(sqldb_sqlite.SqliteDatabase, "_commit", held)
    caller = asyncio.create_task(database.turn_transaction(_insert(1), items=3))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    after = asyncio.create_task(database.turn_transaction(_insert(2), items=1))
    await asyncio.sleep(0.01)
    assert not after.done()  # behind the COMMIT still running
    release.set()
    assert await asyncio.wait_for(after, 10) == 2
    assert await _rows(database) == [1, 2]


async def test_a_write_lock_held_elsewhere_sends_the_group_to_the_thread(
    database: sqldb_sqlite.SqliteDatabase,
) -> None:
    """The loop's thread never waits for another process's write lock: the group goes whole to
    the writer thread, which waits for it while the loop runs on."""
    path = database.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        group = asyncio.create_task(database.turn_transaction(_insert(1), items=3))
        for _ in range(5):
            await asyncio.sleep(0.01)  # the loop runs on
        assert not group.done()
        other.execute("ROLLBACK")
        assert await asyncio.wait_for(group, 10) == 1
        assert await _rows(database) == [1]
    finally:
        other.close()


async def test_a_statement_refused_on_the_loop_rolls_the_group_back(
    database: sqldb_sqlite.SqliteDatabase,
) -> None:
    """A statement SQLite refuses raises its error at once (the turn writer then sends the
    group the transaction's way), with the group's earlier statements rolled back."""
    await database.turn_transaction(_insert(1), items=3)

    def two_then_a_duplicate(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (x) VALUES (2)")
        conn.execute("INSERT INTO t (x) VALUES (1)")

    with pytest.raises(sqlite3.IntegrityError):
        await database.turn_transaction(two_then_a_duplicate, items=3)
    assert await _rows(database) == [1]
    assert await database.turn_transaction(_insert(3), items=3) == 3
    assert await _rows(database) == [1, 3]
