"""SQLite's instance writer (sqlite_instances.py): the fence and the base hold on its own path,
it writes the rows the transaction's way writes, and an event that keeps the instance's
indexed columns does not assign them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage import sqlite_writes
from agentrun.storage.base import LeaseLost
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.machine_rows import MUTABLE
from agentrun.storage.machine_writes import write_group
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    TimerRecord,
)
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqldb_sqlite import SqliteDatabase
from agentrun.storage.sqlite_instances import (
    _CHANGED,
    _HISTORY_COLUMNS,
    SqliteInstanceWriter,
    write_instances,
    write_one,
)

T0 = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/machines.db")
    await store.open()
    await store.instances.open()
    try:
        yield store
    finally:
        await store.instances.close()
        await store.close()


def _instance(id: str, **kw: Any) -> InstanceRecord:
    fields: dict[str, Any] = {
        "id": id,
        "tenant": "acme",
        "workflow": "wf",
        "version": 1,
        "state": InstanceState.ACTIVE,
        "current": "a",
        "data": {"n": 1},
        "input": {"i": 2},
        "created_at": T0,
        "updated_at": T0,
        "last_sequence": 1,
        "entry_sequence": 1,
        "owner": "r1",
        "lease_epoch": 1,
    }
    fields.update(kw)
    return InstanceRecord(**fields)


async def _create(store: SqlStore, id: str) -> InstanceRecord:
    record = _instance(id)
    created = HistoryRecord(id, 1, EntryKind.CREATED, T0, "create", None, None, "", "a")
    await store.instances.create_instance(record, [created], [TimerRecord(id, "1:0", "a", 0, 9.0)])
    return record


def _event(record: InstanceRecord, seq: int, **kw: Any) -> MachineBatch:
    """An event with odd values: a float that looks like an int, None, nested JSON."""
    fields: dict[str, Any] = {
        "current": "b",
        "data": {"n": 2.0, "items": [1, "two", None]},
        "updated_at": T0 + seq,
        "last_sequence": seq,
        "entry_sequence": seq,
        "labels": {"k": "v"},
        "pending": None,
    }
    fields.update(kw)
    moved = _instance(record.id, **fields)
    entry = HistoryRecord(
        record.id,
        seq,
        EntryKind.TRANSITION,
        T0 + seq,
        "GO",
        f"ev-{seq}",
        {"v": 1.0},
        "a",
        "b",
        0,
        [{"ok": True}],
        {"n": 2.0},
        moved.state,
        None,
        True,
    )
    return MachineBatch(
        moved,
        [entry],
        timers=[TimerRecord(record.id, f"{seq}:0", "b", 0, 50 + seq)],
        base=seq - 1,
        fence=("r1", 1),
    )


def _writer(store: SqlStore) -> SqliteInstanceWriter:
    writer = store.database.instance_writer()
    assert isinstance(writer, SqliteInstanceWriter)
    return writer


def test_the_columns_are_the_tables() -> None:
    """The writer's hand-built rows name every history column in the table's order, and its
    UPDATEs assign every column an event changes: the indexed ones apart."""
    assert _HISTORY_COLUMNS == tuple(c.name for c in db.sm_history.c)
    indexed = {
        column.name
        for index in [*db.sm_instances.indexes, *db.sm_instances.constraints]
        if isinstance(index, (sa.Index, sa.UniqueConstraint))
        for column in index.columns
    }
    assert not indexed & set(_CHANGED)
    assert {*_CHANGED, "state", "ended_at"} == set(MUTABLE)


async def test_a_stale_batch_writes_nothing_on_the_direct_path(store: SqlStore) -> None:
    """A batch whose lease moved on, or whose base is not the stored sequence, is left
    unwritten by the writer alone, while its neighbour in the same group commits."""
    for id_ in ("sm-a", "sm-b", "sm-c"):
        await _create(store, id_)
    leased = await store.instances.acquire("sm-a", "r2", lease_seconds=10, now=T0, take=True)
    assert leased is not None and leased.lease_epoch == 2
    a, b, c = (_instance(i) for i in ("sm-a", "sm-b", "sm-c"))
    stale_base = _event(c, 2)
    stale_base.base = 5
    results = await _writer(store)([_event(a, 2), _event(b, 2), stale_base])
    assert results == [UNWRITTEN, None, UNWRITTEN]
    for id_, sequence in (("sm-a", 1), ("sm-b", 2), ("sm-c", 1)):
        got = await store.instances.get_instance(id_)
        assert got is not None and got.last_sequence == sequence
        history = await store.instances.list_history(id_)
        assert [e.sequence for e in history] == list(range(1, sequence + 1))
    assert {t.key for t in await store.instances.list_timers(instance_id="sm-a")} == {"1:0"}


async def test_an_unknown_instance_is_left_to_the_transaction(store: SqlStore) -> None:
    assert await _writer(store)([_event(_instance("sm-none"), 2)]) == [UNWRITTEN]
    assert await store.instances.list_history("sm-none") == []


async def test_a_duplicate_entry_rolls_the_group_back(store: SqlStore) -> None:
    """SQLite refuses a history entry already stored: nothing of the group is written (the
    transaction's way then finds whose batch it was)."""
    for id_ in ("sm-a", "sm-b"):
        await _create(store, id_)
    a, b = _instance("sm-a"), _instance("sm-b")
    clash = _event(b, 2)
    clash.history[0] = HistoryRecord("sm-b", 1, EntryKind.CREATED, T0, "x", None, None, "", "a")
    assert await _writer(store)([_event(a, 2), clash]) is None
    got = await store.instances.get_instance("sm-a")
    assert got is not None and got.last_sequence == 1


async def _write_transaction(store: SqlStore, batch: MachineBatch) -> None:
    def write(conn: sa.Connection) -> None:
        write_group(store.database, conn, [batch])

    await store.database.transaction(write)


def _stored(path: Path, instance_id: str) -> dict[str, list[tuple[object, ...]]]:
    """Every column of the instance's rows as SQLite holds it (quote(): type and value)."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[object, ...]]] = {}
        for table, key, order in (
            ("sm_instances", "id", "id"),
            ("sm_history", "instance_id", "sequence"),
            ("sm_timers", "instance_id", "key"),
        ):
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            quoted = ", ".join(f'quote("{n}")' for n in names if n != key)
            out[table] = conn.execute(
                f"SELECT {quoted} FROM {table} WHERE {key} = ? ORDER BY {order}", (instance_id,)
            ).fetchall()
        return out
    finally:
        conn.close()


async def test_the_rows_are_those_the_transaction_writes(store: SqlStore, tmp_path: Path) -> None:
    """The same events through the writer and through the transaction's way (`write_group`):
    one that keeps the instance ACTIVE, one that ends it, then a timer that fired: the same
    values of the same types in every column, and the indexes agree with the table."""
    for id_ in ("sm-direct", "sm-sqlalchemy"):
        await _create(store, id_)
    for id_ in ("sm-direct", "sm-sqlalchemy"):
        record = _instance(id_)
        moved = _event(record, 2)
        ended = _event(
            record, 3, state=InstanceState.COMPLETED, ended_at=T0 + 3, error={"why": None}
        )
        ended.timers = None
        ended.fired = "2:0"
        for batch in (moved, ended):
            if id_ == "sm-direct":
                assert await _writer(store)([batch]) == [None]
            else:
                await _write_transaction(store, batch)
    got = await store.instances.get_instance("sm-direct")
    assert got is not None and got.state == InstanceState.COMPLETED and got.ended_at == T0 + 3
    history = await store.instances.list_history("sm-direct")
    assert [(e.sequence, e.reentered, e.event_data) for e in history[1:]] == [
        (2, True, {"v": 1.0}),
        (3, True, {"v": 1.0}),
    ]
    direct = _stored(tmp_path / "machines.db", "sm-direct")
    assert len(direct["sm_history"]) == 3 and direct["sm_timers"] == []
    assert direct == _stored(tmp_path / "machines.db", "sm-sqlalchemy")
    conn = sqlite3.connect(tmp_path / "machines.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ended_ids = conn.execute(
            "SELECT id FROM sm_instances INDEXED BY ix_sm_instances_state"
            " WHERE state = 'COMPLETED' ORDER BY id"
        ).fetchall()
        assert ended_ids == [("sm-direct",), ("sm-sqlalchemy",)]
    finally:
        conn.close()


def _shapes(record: InstanceRecord) -> list[MachineBatch]:
    """Batches of every shape an event makes, one after another on `record`'s instance."""
    moved = _event(record, 2, data=record.data, labels={})  # only current & co. move
    moved.timers = None
    two = _event(record, 4, data=record.data, labels={})  # two entries, only moved
    two.history.insert(0, _event(record, 3).history[0])
    two.timers, two.fired, two.base = None, "1:0", 2
    assigned = _event(record, 5, labels={})  # the data changes: the row is rewritten
    assigned.timers, assigned.base = [], 4
    added = _event(record, 6, labels={}, pending={"attempt": 2}, error={"m": 1})
    added.timers, added.added = None, [TimerRecord(record.id, "r:6", "b", -1, 99.0)]
    stale = _event(record, 7)  # its base is not the stored one: nothing written
    stale.base = 2
    ended = _event(record, 7, state=InstanceState.FAILED, ended_at=T0 + 7, labels={})
    ended.history, ended.base = [], 6
    return [moved, two, assigned, added, stale, ended]


async def test_a_batch_written_alone_writes_the_groups_rows(
    store: SqlStore, tmp_path: Path
) -> None:
    """`write_one` (a batch written at once) and `write_instances` (a group) check and write
    the same: for each shape of batch, the same answer and the same rows, column by column."""
    for id_ in ("sm-one", "sm-group"):
        await _create(store, id_)
    one, group = _instance("sm-one", labels={}), _instance("sm-group", labels={})
    database = store.database
    assert isinstance(database, SqliteDatabase)
    answers = []
    for a, b in zip(_shapes(one), _shapes(group), strict=True):
        alone = await database.turn_transaction(lambda conn, a=a: write_one(a, conn), items=1)
        grouped = await database.turn_transaction(
            lambda conn, b=b: write_instances([b], conn), items=1
        )
        assert grouped == [alone]
        answers.append(alone)
        if len(answers) == 2:  # both moved only: the row as it was, its entries hold them
            conn = sqlite3.connect(tmp_path / "machines.db")
            try:
                row = conn.execute("SELECT last_sequence FROM sm_instances WHERE id = 'sm-one'")
                assert row.fetchall() == [(1,)]
            finally:
                conn.close()
        assert _stored(tmp_path / "machines.db", "sm-one") == _stored(
            tmp_path / "machines.db", "sm-group"
        )
    assert answers == [True, True, True, True, False, True]
    got = await store.instances.get_instance("sm-one")
    assert got is not None and got.state is InstanceState.FAILED and got.last_sequence == 7


async def test_an_event_that_keeps_the_indexed_columns_does_not_assign_them(
    store: SqlStore,
) -> None:
    """SQLite rewrites an index entry for every column an UPDATE assigns: an event that leaves
    the instance ACTIVE (state and ended_at unchanged) assigns neither, in one UPDATE, so their
    index pages stay out of the commit; the engine's own commits take this path."""
    record = await _create(store, "sm-a")
    database = store.database
    assert isinstance(database, SqliteDatabase) and database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    statements: list[str] = []
    driver.set_trace_callback(statements.append)
    try:
        await store.instances.commit(_event(record, 2))
    finally:
        driver.set_trace_callback(None)
    updates = [s for s in statements if s.startswith("UPDATE sm_instances")]
    assert len(updates) == 1, updates
    assert '"state" =' not in updates[0].split(" WHERE ")[0], updates[0]


def _commits_count_as_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing at submit also needs commits quick on average and none slow of late: on a busy
    machine a commit can take over INLINE_SLOW_SECONDS, and the writer thread takes the next
    INLINE_PAUSE_COMMITS. These tests are about the loop, not the disk."""
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 3600.0)


async def test_an_idle_loop_commits_at_submit(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an idle loop, `submit` writes the batch itself (no writer task, no suspension: the
    future it returns is done, the rows are there); with other work ready on the loop the
    group commit takes it, so that batches arriving meanwhile share its transaction."""
    _commits_count_as_quick(monkeypatch)
    a, b = await _create(store, "sm-a"), await _create(store, "sm-b")
    machines = store.instances
    groups = machines.groups
    future = machines.submit(_event(a, 2))
    assert future.done() and future.result() is None
    assert machines.groups == groups + 1
    got = await machines.get_instance("sm-a")
    assert got is not None and got.last_sequence == 2
    loop = asyncio.get_running_loop()
    # However quick commits are (a busy loop may commit a group inline then, eae6cd3): a
    # batch written at submit would have no group, so it waits for the others ready.
    monkeypatch.setattr(sqlite_writes, "INLINE_BUSY_MAX_SECONDS", 1.0)
    loop.call_soon(lambda: None)  # other work ready
    queued = machines.submit(_event(b, 2))
    assert not queued.done()
    await queued
    got = await machines.get_instance("sm-b")
    assert got is not None and got.last_sequence == 2


async def test_a_stale_batch_at_submit_gets_the_usual_error(store: SqlStore) -> None:
    """A batch whose lease moved on is not written at submit; the group commit refuses it
    with LeaseLost, as ever."""
    a = await _create(store, "sm-a")
    await store.instances.acquire("sm-a", "r2", lease_seconds=10, now=T0, take=True)
    batch = _event(a, 2)
    batch.base = None  # fenced only (a base that moved on is a ValueError)
    future = store.instances.submit(batch)
    with pytest.raises(LeaseLost):
        await future
    got = await store.instances.get_instance("sm-a")
    assert got is not None and got.last_sequence == 1 and got.owner == "r2"


async def test_an_active_batch_on_an_ended_row_assigns_the_indexed_columns(
    store: SqlStore,
) -> None:
    """The one-UPDATE way holds only while the stored row is ACTIVE; on a row that is not,
    the batch is written by the UPDATE that assigns state and ended_at too."""
    record = await _create(store, "sm-a")
    ended = _event(record, 2, state=InstanceState.CANCELLED, ended_at=T0 + 2)
    assert await _writer(store)([ended]) == [None]
    again = _event(record, 3)
    assert await _writer(store)([again]) == [None]
    got = await store.instances.get_instance("sm-a")
    assert got is not None and (got.state, got.ended_at, got.last_sequence) == (
        InstanceState.ACTIVE,
        None,
        3,
    )


async def test_concurrent_events_share_a_group(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of many instances submitted in one loop turn are written together (one
    transaction, one fsync), however quick commits are: none is written alone at submit."""
    monkeypatch.setattr(sqlite_writes, "INLINE_BUSY_MAX_SECONDS", 1.0)
    records = [await _create(store, f"sm-{n}") for n in range(10)]
    machines = store.instances
    groups = machines.groups

    async def send(record: InstanceRecord) -> None:
        await machines.submit(_event(record, 2))

    await asyncio.gather(*(send(r) for r in records))
    assert machines.groups - groups <= 2, machines.groups - groups
    for record in records:
        got = await machines.get_instance(record.id)
        assert got is not None and got.last_sequence == 2


async def test_batches_written_at_once_let_the_loop_go_round(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches written at submit one after another (a sender that never waits) stop being
    written at once past NOW_STREAK_SECONDS without the loop going round: the next goes
    through the group commit's writer task, and the loop reads its sockets meanwhile."""

    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 0.0)
    _commits_count_as_quick(monkeypatch)
    a, b = await _create(store, "sm-a"), await _create(store, "sm-b")
    await asyncio.sleep(0.001)  # the loop goes round: no streak
    yield_first = store.instances.yield_first
    assert yield_first is not None and not yield_first()
    first = store.instances.submit(_event(a, 2))
    assert first.done()
    assert yield_first()  # a committer that can give the loop a turn first should
    second = store.instances.submit(_event(b, 2))  # the loop has not gone round since
    assert not second.done()
    await second
    await asyncio.sleep(0.001)
    got = await store.instances.get_instance("sm-b")
    assert got is not None and got.last_sequence == 2
    assert not yield_first()
    third = store.instances.submit(_event(got, 3))
    assert third.done()


async def test_instance_commits_leave_reference_checks_out_as_turns_do(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer finds each batch's instance row before it writes any row of it, so SQLite's
    own reference checks are left out (`checked`), as execution turns leave them out: an
    instance commit after a turn's transaction, at submit or in a group, sets no PRAGMA
    foreign_keys on the write connection (it set one at each switch)."""
    _commits_count_as_quick(monkeypatch)
    a, b, c = [await _create(store, f"sm-{n}") for n in "abc"]
    database = store.database
    assert isinstance(database, SqliteDatabase)
    await database.turn_transaction(lambda conn: None, items=1, checked=True)  # a turn's
    assert database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    statements: list[str] = []
    driver.set_trace_callback(statements.append)
    try:
        assert store.instances.submit(_event(a, 2)).done()  # written at submit
        await asyncio.gather(*(store.instances.commit(_event(r, 2)) for r in (b, c)))
    finally:
        driver.set_trace_callback(None)
    assert [s for s in statements if "foreign_keys" in s] == []
    assert sum(s.startswith("INSERT INTO sm_history") for s in statements) == 3
    for id_ in ("sm-a", "sm-b", "sm-c"):
        got = await store.instances.get_instance(id_)
        assert got is not None and got.last_sequence == 2
