"""SQLite specifics: the PRAGMAs durability depends on, and several stores on one file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentrun.storage.records import Batch, EventRecord
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record


async def _pragmas(store: SqlStore) -> dict[str, object]:
    def read(conn: sa.Connection) -> dict[str, object]:
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {n: conn.exec_driver_sql(f"PRAGMA {n}").scalar() for n in names}

    return await store.database.transaction(read)  # the writer connection


async def test_writer_pragmas(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/a/b/c.db")  # parent dirs are created
    await store.open()
    try:
        assert await _pragmas(store) == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 10000,
        }
    finally:
        await store.close()


async def test_two_stores_on_one_file_both_write(tmp_path: Path) -> None:
    """Server and CLI may open the same file: each has its own writer, SQLite's lock and
    busy_timeout serialise them."""
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    first, second = SqlStore(url), SqlStore(url)
    await first.open()
    await second.open()
    try:
        await first.create_execution(execution_record("ex-a"))
        await second.create_execution(execution_record("ex-b"))

        def batches(id: str) -> list[Batch]:
            return [Batch(events=[EventRecord(id, i, "x", time.time())]) for i in range(1, 101)]

        await asyncio.gather(
            *(first.commit(b) for b in batches("ex-a")),
            *(second.commit(b) for b in batches("ex-b")),
        )
        for store in (first, second):
            for id in ("ex-a", "ex-b"):
                assert len(await store.list_events(id)) == 100
    finally:
        await first.close()
        await second.close()


async def test_a_write_lock_held_elsewhere_is_store_error_then_recovers(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from agentrun.storage.base import StoreError

    path = tmp_path / "locked.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    store.busy_timeout_ms = 200
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.create_execution(execution_record("ex-1"))
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreError):
            await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        with pytest.raises(StoreError):
            await store.create_execution(execution_record("ex-2"))
        assert await store.get_execution("ex-1") is not None  # reads still work (WAL)
        other.execute("ROLLBACK")
        await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        await store.create_execution(execution_record("ex-2"))
        assert len(await store.list_events("ex-1")) == 1
    finally:
        other.close()
        await store.close()


async def test_a_commit_waiting_for_a_lock_held_elsewhere_leaves_the_loop_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small group commit may run on the loop's thread, but never waits there for another
    process's write lock: it waits in the writer thread while the loop runs on, and is
    written once the lock is free."""
    import sqlite3

    from agentrun.storage import sqlite_writes

    # However slow this machine's disk is today, the commit is one the loop's thread may take.
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 3600.0)

    path = tmp_path / "busy.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    # Longer than the ticks below could take even on a loaded machine: a loop that waited
    # for the lock would stall for all of it.
    store.busy_timeout_ms = 30_000
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await store.create_execution(execution_record("ex-1"))
        await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        commit = asyncio.create_task(
            store.commit(Batch(events=[EventRecord("ex-1", 2, "x", time.time())]))
        )
        started = time.monotonic()
        for _ in range(20):  # the loop keeps running while the commit waits
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 15, "the loop stalled behind another's lock"
        assert not commit.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(commit, 10)
        await store.commit(Batch(events=[EventRecord("ex-1", 3, "x", time.time())]))
        assert [e.sequence for e in await store.list_events("ex-1")] == [1, 2, 3]
    finally:
        other.close()
        await store.close()


async def test_a_commit_goes_to_the_thread_while_the_loop_has_other_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small group commit runs on the loop's thread only when nothing else is ready to
    run there: with other tasks ready (calls arriving one by one, as gRPC hands them over)
    it goes to the writer thread, so the loop is not held up for its fsync and the next
    group gathers the batches that arrive meanwhile; unless commits are quicker than the
    hand-off to the thread (INLINE_BUSY_MAX_SECONDS)."""
    import threading

    from agentrun.storage import sqldb_sqlite, sqlite_writes

    # However slow this machine's disk is today, the commit is one the loop's thread may take.
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 3600.0)
    # Slower than the hand-off to the thread, however fast this machine's disk is today.
    monkeypatch.setattr(sqlite_writes, "INLINE_BUSY_MAX_SECONDS", 0.0)
    on_loop: list[bool] = []
    run = sqldb_sqlite.SqliteDatabase._run

    def recorded(self: sqldb_sqlite.SqliteDatabase, *args: object, **kwargs: object) -> object:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqldb_sqlite.SqliteDatabase, "_run", recorded)
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}")
    await store.open()
    try:
        await store.create_execution(execution_record("ex-1"))
        on_loop.clear()
        await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        assert on_loop == [True]  # an idle loop: the commit on its thread

        busy = True

        async def other_work() -> None:
            while busy:
                await asyncio.sleep(0)  # always ready to run again

        worker = asyncio.create_task(other_work())
        try:
            on_loop.clear()
            for sequence in (2, 3):
                await store.commit(Batch(events=[EventRecord("ex-1", sequence, "x", time.time())]))
            assert on_loop == [False, False]  # the loop had work: in the writer thread
            # Commits quicker than a hand-off stay on the loop's thread, busy or not.
            monkeypatch.setattr(sqlite_writes, "INLINE_BUSY_MAX_SECONDS", 3600.0)
            on_loop.clear()
            await store.commit(Batch(events=[EventRecord("ex-1", 4, "x", time.time())]))
            assert on_loop == [True]
        finally:
            busy = False
            await worker
        assert [e.sequence for e in await store.list_events("ex-1")] == [1, 2, 3, 4]
    finally:
        await store.close()


async def test_a_read_on_the_loops_thread_never_waits_for_a_lock(tmp_path: Path) -> None:
    """`read_now` (a reload's read, `get_execution`) runs on the loop's thread with no busy
    wait: a file locked by another connection sends the read to the pool (which may wait for
    the lock in its thread), and the answer is the same."""
    import sqlite3

    from agentrun.storage import sqldb_sqlite

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/main.db")
    await store.open()
    database = store.database
    assert isinstance(database, sqldb_sqlite.SqliteDatabase)
    assert database._now_reader is not None and database._engine is not None
    await store.create_execution(execution_record("ex-1"))
    on_loop: list[str] = []
    pooled: list[str] = []
    sa.event.listen(database._now_reader, "before_cursor_execute", lambda *a: on_loop.append(a[2]))
    sa.event.listen(
        database._engine.sync_engine, "before_cursor_execute", lambda *a: pooled.append(a[2])
    )
    assert (await store.get_execution("ex-1")).id == "ex-1"  # type: ignore[union-attr]
    assert (len(on_loop), len(pooled)) == (1, 0)
    # The loop's reader now finds its file locked (exclusively, by another connection).
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE executions (id TEXT)")
    holder.execute("BEGIN EXCLUSIVE")
    real = database._now_reader
    database._now_reader = sa.create_engine(f"sqlite:///{locked}", connect_args={"timeout": 0})
    database._now_conn = None
    try:
        assert (await store.get_execution("ex-1")).id == "ex-1"  # type: ignore[union-attr]
        read = await store.restore_read("ex-1")
        assert read is not None and read[0].id == "ex-1"
        assert len(pooled) == 2  # both through the pool
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        database._now_reader.dispose()
        database._now_reader, database._now_conn = real, None
        await store.close()


async def test_an_unwritable_location_is_store_error(tmp_path: Path) -> None:
    import pytest

    from agentrun.storage.base import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError):
        await SqlStore(f"sqlite+aiosqlite:///{blocker}/sub/x.db").open()
    with pytest.raises(StoreError):
        await SqlStore(f"sqlite+aiosqlite:///{blocker}").open()  # not a database


def test_the_next_lease_expiry_reads_only_other_owners_rows(tmp_path: Path) -> None:
    """Every replica asks every lease/3 (engine/upkeep.py): the query reads three ranges of
    (state, owner), so neither the rows the asker holds (idle executions can be most of them)
    nor finished ones; as one `owner != ?` filter on the state index it read every unfinished
    execution."""
    import sqlite3

    from sqlalchemy.dialects import sqlite

    from agentrun.storage import execution_leases
    from tests.storage.templates import migrated_sqlite

    migrated_sqlite(tmp_path / "plan.db")
    statement = execution_leases._NEXT_EXPIRY.params(b_owner="r1")
    text = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    conn = sqlite3.connect(tmp_path / "plan.db")
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text)]
    finally:
        conn.close()
    reads = [line for line in plan if " executions " in f"{line} "]
    assert sorted(reads) == [
        "SEARCH executions USING INDEX ix_executions_state_owner (state=? AND owner<?)",
        "SEARCH executions USING INDEX ix_executions_state_owner (state=? AND owner=?)",
        "SEARCH executions USING INDEX ix_executions_state_owner (state=? AND owner>?)",
    ], plan


async def test_checkpoints_run_in_the_writer_thread_never_in_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits written at once on the loop's thread never carry a WAL checkpoint (SQLite's
    autocheckpoint ran inside the commit that crossed 1,000 pages, holding the loop): the
    database file changes only between commits, in the writer thread's checkpoints, and the
    WAL stays bounded (it starts over after each)."""
    import os
    import sqlite3

    from agentrun.storage import sqldb_sqlite, sqlite_writes

    # However slow this machine's disk and CPUs are today, commits are ones the loop's thread
    # may take (under stress-ng a slow commit or a descheduled streak sent all but 65 of 1,500
    # to the thread, and the test no longer looked at commits written at once).
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 3600.0)

    path = tmp_path / "main.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    database = store.database
    assert isinstance(database, sqldb_sqlite.SqliteDatabase)
    await database.transaction(
        lambda conn: conn.exec_driver_sql("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
    )
    blob = os.urandom(3 * 4096)  # ~4 WAL pages a commit, as a chain step

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO blobs (b) VALUES (?)", (blob,))

    def insert_sa(conn: sa.Connection) -> None:
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        insert(driver)

    changed_in_commit = 0
    written_now = 0
    try:
        for _ in range(1500):  # ~6,000 pages: six checkpoints' worth
            before = path.stat().st_size
            if database.write_now(insert) is not None:
                written_now += 1
                changed_in_commit += path.stat().st_size != before
            else:
                await database.transaction(insert_sa)
            await asyncio.sleep(0)  # the loop goes round (a checkpoint may run meanwhile)
        await asyncio.sleep(0.05)
        assert written_now > 1000
        assert changed_in_commit == 0
        assert path.stat().st_size > 1000 * len(blob)  # the rows reached the file: checkpoints ran
        wal = Path(f"{path}-wal").stat().st_size
        assert wal < 2 * sqlite_writes.CHECKPOINT_PAGES * 4200
    finally:
        await store.close()
