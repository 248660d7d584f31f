"""SQLite's turn writer (sqlite_turns.py): the fence holds on its own path, and it writes the
rows the transaction's way writes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrun.storage import schema as db
from agentrun.storage.base import LeaseLost
from agentrun.storage.executions import _Rows
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqlite_turns import SqliteTurnWriter
from tests.storage.factories import execution_record

T0 = 1_700_000_000.0
# Every execution here: the same input and creation time, so both write paths store the same.
_SAME = {"input": {"x": 1}, "created_at": T0}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/turns.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _turn(execution: ExecutionRecord, fence: tuple[str, int] | None) -> _Rows:
    """A turn with odd values: ints for float columns, floats that look like ints, None."""
    execution.output = {"total": 1.0, "items": [1, "two", None]}
    execution.vars = {"n": 3}
    execution.usage = {"tokens": 7.0}
    execution.last_sequence = 2
    execution.started_at = 1_700_000_001  # an int into a float column
    return _Rows.of(
        Batch(
            execution=execution,
            nodes=[
                NodeRecord(
                    execution_id=execution.id,
                    node_id="a",
                    state=NodeState.SUCCEEDED,
                    attempt=1,
                    output=2.0,
                    started_at=5,
                    ended_at=6.5,
                    completed_order=1,
                    usage={"cost": 0.25},
                ),
                NodeRecord(execution_id=execution.id, node_id="b", state=NodeState.RUNNING),
            ],
            events=[
                EventRecord(execution.id, 1, "node.succeeded", T0, "a", {"output": 2.0}),
                EventRecord(execution.id, 2, "node.running", 7, "b", None),
            ],
            fence=fence,
        )
    )


async def test_a_stale_fence_writes_nothing_on_the_direct_path(store: SqlStore) -> None:
    """The turn writer alone (not the transaction's way behind it) leaves a stale batch
    unwritten, while its neighbour in the same group commits."""
    for id_ in ("ex-a", "ex-b"):
        await store.create_execution(execution_record(id_, **_SAME))
    first = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    await store.release_leases("r1")
    (moved,) = await store.claim_executions("r2", lease_seconds=10, now=T0 + 1, limit=1)
    assert moved.id == "ex-a" and moved.lease_epoch == 2
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    results = await writer([_turn(first["ex-a"], ("r1", 1)), _turn(first["ex-b"], ("r1", 1))])
    assert results is not None
    assert results[0] is UNWRITTEN and results[1] is None, results
    assert await store.get_nodes("ex-a") == []
    assert await store.list_events("ex-a") == []
    stored = await store.get_execution("ex-a")
    assert stored is not None and stored.output is None and stored.owner == "r2"
    assert [n.node_id for n in await store.get_nodes("ex-b")] == ["a", "b"]
    assert [e.sequence for e in await store.list_events("ex-b")] == [1, 2]


async def test_an_unknown_execution_is_left_to_the_transaction(store: SqlStore) -> None:
    writer = store.database.turn_writer()
    assert writer is not None
    assert await writer([_turn(execution_record("ex-none", **_SAME), None)]) == [UNWRITTEN]
    assert await store.list_events("ex-none") == []


def _stored(path: Path, execution_id: str) -> dict[str, list[tuple[object, ...]]]:
    """Every column of the execution's rows as SQLite holds it (quote(): type and value)."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[object, ...]]] = {}
        for table, key, order in (
            ("executions", "id", "id"),
            ("nodes", "execution_id", "node_id"),
            ("events", "execution_id", "sequence"),
        ):
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            quoted = ", ".join(f'quote("{n}")' for n in names if n not in (key, "request_id"))
            out[table] = conn.execute(
                f"SELECT {quoted} FROM {table} WHERE {key} = ? ORDER BY {order}", (execution_id,)
            ).fetchall()
        return out
    finally:
        conn.close()


async def test_the_rows_are_those_the_transaction_writes(store: SqlStore, tmp_path: Path) -> None:
    """The same turn through the turn writer and through the transaction's way (`_apply`)
    leaves the same values of the same types in every column."""
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        await store.create_execution(execution_record(id_, **_SAME))
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    writer = store.database.turn_writer()
    assert writer is not None
    assert await writer([_turn(claimed["ex-direct"], ("r1", 1))]) == [None]
    batch = _turn(claimed["ex-sqlalchemy"], ("r1", 1))
    await store.database.transaction(lambda conn: store.executions._apply(conn, [batch]))
    direct = _stored(tmp_path / "turns.db", "ex-direct")
    assert direct["nodes"] and direct["events"]
    assert direct == _stored(tmp_path / "turns.db", "ex-sqlalchemy")


async def test_a_turn_that_ends_the_execution_writes_its_state_and_end(
    store: SqlStore, tmp_path: Path
) -> None:
    """The indexed columns (state, ended_at) are written apart from the others, only when they
    change: a turn that keeps them, then one that ends the execution, leave the same row as the
    transaction's way, and the indexes agree with the table."""
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        await store.create_execution(execution_record(id_, **_SAME))
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    writer = store.database.turn_writer()
    assert writer is not None
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        running = _turn(claimed[id_], ("r1", 1))
        claimed[id_].state = ExecutionState.SUCCEEDED
        claimed[id_].ended_at = T0 + 9
        ended = _turn(claimed[id_], ("r1", 1))
        ended.nodes, ended.events = [], []
        if id_ == "ex-direct":
            assert await writer([running]) == [None]
            assert await writer([ended]) == [None]
        else:
            for batch in (running, ended):
                await store.database.transaction(
                    lambda conn, b=batch: store.executions._apply(conn, [b])
                )
    stored = await store.get_execution("ex-direct")
    assert stored is not None and stored.state == ExecutionState.SUCCEEDED
    assert stored.ended_at == T0 + 9
    assert _stored(tmp_path / "turns.db", "ex-direct") == _stored(
        tmp_path / "turns.db", "ex-sqlalchemy"
    )
    _check_ended_index(tmp_path / "turns.db")


def _check_ended_index(path: Path) -> None:
    """The file is sound, and the state index holds both executions as SUCCEEDED."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ended_ids = conn.execute(
            "SELECT id FROM executions INDEXED BY ix_executions_state_owner"
            " WHERE state = 'SUCCEEDED' ORDER BY id"
        ).fetchall()
        assert ended_ids == [("ex-direct",), ("ex-sqlalchemy",)]
    finally:
        conn.close()


async def test_commits_go_through_the_turn_writer(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own commits take the direct path (the contract suite tests it there): a
    start through the group commit's `write_turns`, a turn written at once from its records
    (`write_turn`) or, queued, through `write_turns`."""
    from agentrun.storage import sqlite_turns

    calls: list[str] = []
    write, write_one = sqlite_turns.write_turns, sqlite_turns.write_turn

    def counted(batches, conn):  # type: ignore[no-untyped-def]
        calls.append(f"group of {len(batches)}")
        return write(batches, conn)

    def counted_one(batch, conn):  # type: ignore[no-untyped-def]
        calls.append("at once")
        return write_one(batch, conn)

    monkeypatch.setattr(sqlite_turns, "write_turns", counted)
    monkeypatch.setattr(sqlite_turns, "write_turn", counted_one)
    await store.create_execution(execution_record("ex-c", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    await store.commit(Batch(execution=mine, fence=("r1", 1)))
    assert calls[0] == "group of 1" and calls[1:] in (["at once"], ["group of 1"]), calls


def _batch(execution: ExecutionRecord, fence: tuple[str, int] | None) -> Batch:
    """`_turn`'s batch, as the engine commits it (records, not rows)."""
    rows = _turn(execution, fence)
    return Batch(
        execution=execution,
        nodes=[db.node_record(_Mapped(n)) for n in rows.nodes],
        events=[db.event_record(_Mapped(e)) for e in rows.events],
        fence=fence,
    )


class _Mapped:
    """A row dict as `schema`'s record mappers read rows."""

    def __init__(self, row: dict[str, object]) -> None:
        self._mapping = row


async def _two_claimed(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, ExecutionRecord], SqliteTurnWriter]:
    """ex-direct and ex-sqlalchemy, claimed by r1, and the turn writer, which writes at once
    however slow this machine's commits are now (slow ones go to the writer thread)."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        await store.create_execution(execution_record(id_, **_SAME))
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    return claimed, writer


async def test_a_turn_written_at_once_holds_the_rows_the_transaction_writes(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn written at once from its records (`write_now`), then one that ends the
    execution, leave the values of the transaction's way in every column (odd values: ints in
    float columns, None), and the indexes agree with the table."""
    claimed, writer = await _two_claimed(store, monkeypatch)
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        running = _batch(claimed[id_], ("r1", 1))
        if id_ == "ex-direct":
            assert writer.write_now(running)
        else:
            rows = _Rows.of(running)
            await store.database.transaction(
                lambda conn, b=rows: store.executions._apply(conn, [b])
            )
        claimed[id_].state = ExecutionState.SUCCEEDED
        claimed[id_].ended_at = T0 + 9
        ended = Batch(execution=claimed[id_], fence=("r1", 1))
        if id_ == "ex-direct":
            await asyncio.sleep(0.01)  # the loop goes round: a new streak of writes at once
            assert writer.write_now(ended)
        else:
            rows = _Rows.of(ended)
            await store.database.transaction(
                lambda conn, b=rows: store.executions._apply(conn, [b])
            )
    direct = _stored(tmp_path / "turns.db", "ex-direct")
    assert direct["nodes"] and direct["events"]
    assert direct == _stored(tmp_path / "turns.db", "ex-sqlalchemy")
    _check_ended_index(tmp_path / "turns.db")


async def test_a_step_that_keeps_the_state_is_one_update_without_returning(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn that keeps the execution's state and end is one UPDATE, which does not assign
    them (their index entries are not rewritten) and returns nothing (a RETURNING made SQLite
    build the returned rows: most of the UPDATE's cost), on both paths; a turn that changes
    them adds the UPDATE that assigns them."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    await store.create_execution(execution_record("ex-u", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    seen: list[str] = []
    database = store.database
    assert database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    driver.set_trace_callback(seen.append)
    try:
        assert writer.write_now(_batch(mine, ("r1", 1)))
        at_once = [s for s in seen if s.startswith("UPDATE executions")]
        seen.clear()
        queued = _turn(mine, ("r1", 1))
        queued.nodes, queued.events = [], []
        assert await writer([queued]) == [None]
        grouped = [s for s in seen if s.startswith("UPDATE executions")]
        seen.clear()
        mine.state, mine.ended_at = ExecutionState.FAILED, T0 + 5
        await asyncio.sleep(0.01)
        assert writer.write_now(Batch(execution=mine, fence=("r1", 1)))
        ending = [s for s in seen if s.startswith("UPDATE executions")]
    finally:
        driver.set_trace_callback(None)
    for updates in (at_once, grouped):
        assert len(updates) == 1, updates
        assert "RETURNING" not in updates[0]
        assert '"state" =' not in updates[0] and '"ended_at" =' not in updates[0]
    assert len(ending) == 2 and "'FAILED'" in ending[1], ending
    stored = await store.get_execution("ex-u")
    assert stored is not None and stored.state == ExecutionState.FAILED
    assert stored.ended_at == T0 + 5 and stored.last_sequence == 2


def test_none_is_bound_without_the_adapter_protocol() -> None:
    """sqlite3 finds the adapter registered for None first (sqldb_sqlite.py), instead of
    looking `__adapt__` and `__conform__` up for every NULL parameter; it binds NULL."""
    from agentrun.storage import sqldb_sqlite

    assert sqldb_sqlite  # imported: the adapter is registered
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    conn = sqlite3.connect(":memory:")
    try:
        assert conn.execute("SELECT quote(?), ? IS NULL", (None, None)).fetchone() == ("NULL", 1)
    finally:
        conn.close()


def _start(id_: str, request_id: str | None) -> _Rows:
    """A start: the new execution with its first turn's rows, as create_execution queues it."""
    record = execution_record(id_, **_SAME)
    record.request_id = request_id
    record.request_hash = "h" if request_id else None
    record.labels = {"k": "v"}
    record.owner, record.lease_epoch, record.lease_expires_at = "r1", 1, T0 + 10
    turn = _turn(execution_record(id_, **_SAME), None)
    return _Rows(
        execution=None,
        nodes=turn.nodes,
        events=turn.events,
        consumed=[],
        create=record,
        create_row=db.execution_row(record),
    )


async def test_a_start_is_written_as_the_transaction_writes_it(
    store: SqlStore, tmp_path: Path
) -> None:
    """A new execution with its first turn through the turn writer leaves the rows the
    transaction's way leaves, and answers (the record, created) as it does."""
    writer = store.database.turn_writer()
    assert writer is not None
    direct = _start("ex-direct", "req-1")
    results = await writer([direct])
    assert results is not None and results[0] is not UNWRITTEN
    record, created = results[0]
    assert created and record == direct.create and record is not direct.create
    batch = _start("ex-sqlalchemy", "req-2")
    await store.database.transaction(lambda conn: store.executions._apply(conn, [batch]))
    rows = _stored(tmp_path / "turns.db", "ex-direct")
    assert rows["executions"] and rows["nodes"] and rows["events"]
    assert rows == _stored(tmp_path / "turns.db", "ex-sqlalchemy")


async def test_a_used_request_id_writes_nothing_and_answers_the_stored_execution(
    store: SqlStore,
) -> None:
    """In one group: a start, a start repeating its request id (left to the transaction's
    way, which answers the stored execution) and another start (written)."""
    writer = store.database.turn_writer()
    assert writer is not None
    first, repeat, other = _start("ex-1", "req"), _start("ex-2", "req"), _start("ex-3", None)
    results = await writer([first, repeat, other])
    assert results is not None
    assert results[0][1] is True and results[1] is UNWRITTEN and results[2][1] is True
    assert await store.get_execution("ex-2") is None
    assert await store.list_events("ex-2") == [] and await store.get_nodes("ex-2") == []
    again = _start("ex-4", "req").create
    assert again is not None
    stored, created = await store.create_execution(again)
    assert not created and stored.id == "ex-1"
    assert [e.sequence for e in await store.list_events("ex-1")] == [1, 2]


def _start_records(id_: str, request_id: str | None) -> _Rows:
    """`_start` as `create_soon` queues it on SQLite: its records (`_Rows.of_records`)."""
    rows = _start(id_, request_id)
    assert rows.create is not None
    return _Rows.of_records(
        rows.create,
        [db.node_record(_Mapped(n)) for n in rows.nodes],
        [db.event_record(_Mapped(e)) for e in rows.events],
    )


async def test_a_start_queued_as_its_records_is_written_as_the_transaction_writes_it(
    store: SqlStore, tmp_path: Path
) -> None:
    """A start queued as its records (no rows made when queued) leaves, through the turn
    writer and through the transaction's way (its rows made then), the rows a start queued
    as rows leaves, and answers (a copy of the record, created)."""
    writer = store.database.turn_writer()
    assert writer is not None
    direct = _start_records("ex-records", "req-1")
    assert direct.nodes == [] and direct.events == [] and direct.records is not None
    results = await writer([direct])
    assert results is not None and results[0] is not UNWRITTEN
    record, created = results[0]
    assert created and record == direct.create and record is not direct.create
    behind = _start_records("ex-behind", "req-2")
    answers = await store.database.transaction(lambda conn: store.executions._apply(conn, [behind]))
    assert answers[0][1] is True and behind.records is None
    rows = _start("ex-rows", "req-3")
    assert await writer([rows]) is not None
    expected = _stored(tmp_path / "turns.db", "ex-rows")
    assert expected["executions"] and expected["nodes"] and expected["events"]
    assert _stored(tmp_path / "turns.db", "ex-records") == expected
    assert _stored(tmp_path / "turns.db", "ex-behind") == expected


async def test_a_start_queued_as_its_records_with_a_used_request_id_gets_the_stored_one(
    store: SqlStore,
) -> None:
    """The group commit with starts queued as records (`create_execution` on SQLite): a
    repeated request id in the same group writes nothing and is answered the stored
    execution (the transaction's way, with its rows made then)."""
    first, repeat, other = (
        _start_records("ex-1", "req"),
        _start_records("ex-2", "req"),
        _start_records("ex-3", None),
    )
    writer = store.executions.writer
    answers = await asyncio.gather(*(writer.submit(b) for b in (first, repeat, other)))
    assert [created for _, created in answers] == [True, False, True]
    assert answers[1][0].id == "ex-1"
    assert await store.get_execution("ex-2") is None
    assert await store.list_events("ex-2") == [] and await store.get_nodes("ex-2") == []
    assert [e.sequence for e in await store.list_events("ex-1")] == [1, 2]
    assert [n.node_id for n in await store.get_nodes("ex-3")] == ["a", "b"]


async def test_signals_a_turn_stores_are_those_the_transaction_writes(
    store: SqlStore, tmp_path: Path
) -> None:
    """`Batch.signals` on the direct path: each the next seq of its execution (after those
    stored before), the same columns as the transaction's way writes."""
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        await store.create_execution(execution_record(id_, **_SAME))
        await store.add_signal(SignalRecord(id_, "go", [1], "before", T0))
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}

    def turn(execution: ExecutionRecord) -> _Rows:
        taken = SignalRecord(execution.id, "go", {"ok": 1.0}, "taken", T0 + 1, consumed_by="ask")
        kept = SignalRecord(execution.id, "other", None, "kept", 5)
        rows = _turn(execution, ("r1", 1))
        rows.signals = _Rows.of(Batch(signals=[taken, kept])).signals
        return rows

    writer = store.database.turn_writer()
    assert writer is not None
    assert await writer([turn(claimed["ex-direct"])]) == [None]
    batch = turn(claimed["ex-sqlalchemy"])
    await store.database.transaction(lambda conn: store.executions._apply(conn, [batch]))
    conn = sqlite3.connect(tmp_path / "turns.db")
    try:
        rows = {
            id_: conn.execute(
                "SELECT seq, quote(name), quote(data), quote(signal_id), quote(created_at),"
                " quote(consumed_by) FROM signals WHERE execution_id = ? ORDER BY seq",
                (id_,),
            ).fetchall()
            for id_ in ("ex-direct", "ex-sqlalchemy")
        }
    finally:
        conn.close()
    assert [r[0] for r in rows["ex-direct"]] == [1, 2, 3]
    assert rows["ex-direct"] == rows["ex-sqlalchemy"]
    assert [s.signal_id for s in await store.pending_signals("ex-direct")] == ["before", "kept"]
    # A used signal id refuses the group on the direct path (nothing written).
    again = _turn(claimed["ex-direct"], ("r1", 1))
    again.events = []  # its events are stored already: only the signal is refused
    again.signals = _Rows.of(
        Batch(signals=[SignalRecord("ex-direct", "go", 1, "taken", T0)])
    ).signals
    assert await writer([again]) is None


async def test_a_turn_on_an_idle_loop_is_written_by_commit_itself(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing queued and nothing else ready on the loop: `commit` writes the turn itself (the
    writer task's two loop turns saved), and a stale fence still raises LeaseLost through the
    group commit, with nothing written."""
    from agentrun.storage import sqlite_writes

    # However slow this machine's commits are now (slow ones go to the writer thread).
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    await store.create_execution(execution_record("ex-n", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    groups, now = store.writer.groups, store.executions.written_now
    mine.last_sequence = 1
    event = EventRecord("ex-n", 1, "node.running", T0)
    await store.commit(Batch(execution=mine, events=[event], fence=("r1", 1)))
    assert (store.writer.groups, store.executions.written_now) == (groups, now + 1)
    assert [e.sequence for e in await store.list_events("ex-n")] == [1]
    await store.release_leases("r1")
    await store.claim_executions("r2", lease_seconds=10, now=T0 + 1)
    stale = EventRecord("ex-n", 2, "node.running", T0)
    with pytest.raises(LeaseLost):
        await store.commit(Batch(execution=mine, events=[stale], fence=("r1", 1)))
    assert [e.sequence for e in await store.list_events("ex-n")] == [1]
    assert store.executions.written_now == now + 1


async def test_commit_at_once_writes_a_turn_without_a_coroutine(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Store.commit_at_once` (what a run tries before its `commit` coroutine): a turn is
    written and True returned; a stale fence writes nothing and returns False (its `commit`
    then raises LeaseLost), and so does a turn while the group commit has one queued (it would
    overtake it) and a closed store."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    at_once = store.commit_at_once
    assert at_once is not None
    await store.create_execution(execution_record("ex-a", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    groups = store.writer.groups
    mine.last_sequence = 1
    first = Batch(execution=mine, events=[EventRecord("ex-a", 1, "x", T0)], fence=("r1", 1))
    # Another callback ready on the loop (a timer of the store's own tasks due) defers it to
    # the group commit: nothing written then, tried again at the next loop turn.
    for _ in range(100):
        if at_once(first):
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError("never written at once")
    assert store.writer.groups == groups
    assert [e.sequence for e in await store.list_events("ex-a")] == [1]
    # A batch queued for the group commit, not written yet: nothing overtakes it.
    mine.last_sequence = 2
    queued = store.writer.submit(
        _Rows.of(Batch(execution=mine, events=[EventRecord("ex-a", 2, "x", T0)], fence=("r1", 1)))
    )
    mine.last_sequence = 3
    third = Batch(execution=mine, events=[EventRecord("ex-a", 3, "x", T0)], fence=("r1", 1))
    assert not at_once(third)
    await queued
    await store.commit(third)
    await store.release_leases("r1")
    await store.claim_executions("r2", lease_seconds=10, now=T0 + 1)
    mine.last_sequence = 4
    stale = Batch(execution=mine, events=[EventRecord("ex-a", 4, "x", T0)], fence=("r1", 1))
    assert not at_once(stale)
    with pytest.raises(LeaseLost):
        await store.commit(stale)
    assert [e.sequence for e in await store.list_events("ex-a")] == [1, 2, 3]
    await store.close()
    assert not at_once(stale)


async def test_concurrent_turns_are_grouped_not_written_one_by_one(store: SqlStore) -> None:
    """With other commits ready on the loop, a turn is queued for the group commit (one
    fsync for them all), not written by its own `commit` at once."""
    ids = [f"ex-{i:02d}" for i in range(20)]
    for id_ in ids:
        await store.create_execution(execution_record(id_, **_SAME))
    claimed = await store.claim_executions("r1", lease_seconds=10, now=T0, limit=50)
    groups, now = store.writer.groups, store.executions.written_now

    async def turn(record: ExecutionRecord) -> None:
        record.last_sequence = 1
        event = EventRecord(record.id, 1, "node.running", T0)
        await store.commit(Batch(execution=record, events=[event], fence=("r1", 1)))

    await asyncio.gather(*(turn(record) for record in claimed))
    assert store.executions.written_now - now <= 1
    assert store.writer.groups - groups < 10
    for id_ in ids:
        assert [e.sequence for e in await store.list_events(id_)] == [1]


async def test_turns_written_at_once_let_the_loop_go_round(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turns written at once keep the loop from its sockets: once NOW_STREAK_SECONDS passed
    since the loop last went round, `commit` gives the loop one turn and writes the turn at
    once again (nothing else was ready), not through the group commit's writer task and
    thread (~9 turns in a chain of 100 on a disk went that way, each costing more than its
    commit)."""
    from agentrun.storage import sqldb_sqlite, sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 0.0)
    await store.create_execution(execution_record("ex-s", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    database = store.database
    assert isinstance(database, sqldb_sqlite.SqliteDatabase)
    ways, spent = [], []
    for sequence in (1, 2, 3):
        groups, now = store.writer.groups, store.executions.written_now
        spent.append(database.streak_spent())
        mine.last_sequence = sequence
        event = EventRecord("ex-s", sequence, "node.running", T0)
        await store.commit(Batch(execution=mine, events=[event], fence=("r1", 1)))
        ways.append((store.writer.groups - groups, store.executions.written_now - now))
    assert spent == [False, True, True]  # the later two were held by the streak
    assert ways == [(0, 1), (0, 1), (0, 1)]
    assert [e.sequence for e in await store.list_events("ex-s")] == [1, 2, 3]


async def test_a_turn_after_the_loop_went_round_is_written_at_once(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run gives the loop a turn now and then (`await asyncio.sleep(0)`) and resumes before
    the streak's timer has run, which is then the only callback ready: that timer is no other
    work, and the next turn is written at once too (it went the group commit's way)."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    await store.create_execution(execution_record("ex-r", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    await asyncio.sleep(0.01)  # no streak under way
    written = []
    for sequence in (1, 2, 3):
        mine.last_sequence = sequence
        event = EventRecord("ex-r", sequence, "node.running", T0)
        written.append(writer.write_now(Batch(execution=mine, events=[event], fence=("r1", 1))))
        await asyncio.sleep(0)
    assert written == [True, True, True]
    assert [e.sequence for e in await store.list_events("ex-r")] == [1, 2, 3]


async def test_a_streak_resumed_after_the_loop_went_round_is_bounded_too(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streak's timer due and not run yet (a run resumed before it) tells that the loop
    went round: a streak begins again there, and is bounded as any. Turns written at once
    without a suspension after it stop at NOW_STREAK_SECONDS (the loop waited for its sockets
    as long as the writes went on)."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 0.0)
    await store.create_execution(execution_record("ex-b", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    await asyncio.sleep(0.01)  # no streak under way

    def turn(sequence: int) -> bool:
        mine.last_sequence = sequence
        event = EventRecord("ex-b", sequence, "node.running", T0)
        return writer.write_now(Batch(execution=mine, events=[event], fence=("r1", 1)))

    written = [turn(1)]
    await asyncio.sleep(0)  # the loop goes round; this resumes before the streak's timer
    written += [turn(2), turn(3), turn(4)]  # no suspension between them
    assert written == [True, True, False, False]
    assert [e.sequence for e in await store.list_events("ex-b")] == [1, 2]


async def test_rows_whose_nulls_are_literals_are_those_the_transaction_writes(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn written at once whose execution and nodes leave their usual columns None takes
    the statements that write those as NULL literals (`_Slim`): over stored values (an output,
    a node's error, usage and wake time) and for a new node, the rows are the transaction's."""
    claimed, writer = await _two_claimed(store, monkeypatch)
    database = store.database
    assert database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    seen: list[str] = []
    for id_ in ("ex-direct", "ex-sqlalchemy"):
        execution = claimed[id_]
        execution.output, execution.usage, execution.last_sequence = {"x": 1}, {"c": 1.0}, 1
        retrying = NodeRecord(id_, "a", NodeState.RETRYING, 1, error={"m": 1}, wake_at=5.0)
        retrying.usage = {"cost": 0.5}
        first = Batch(execution=execution, nodes=[retrying], fence=("r1", 1))
        execution.output, execution.usage = None, None
        execution.last_sequence = 2
        done = NodeRecord(id_, "a", NodeState.SUCCEEDED, 2, output=3, started_at=1, ended_at=2)
        new = NodeRecord(id_, "b", NodeState.RUNNING, 1, started_at=2.5)
        event = EventRecord(id_, 1, "node.succeeded", T0, "a", None)
        second = Batch(execution=execution, nodes=[done, new], events=[event], fence=("r1", 1))
        if id_ == "ex-direct":
            first_rows = _Rows.of(first)  # as it was before the second turn changed the record
            await store.database.transaction(
                lambda conn, b=first_rows: store.executions._apply(conn, [b])
            )
            await asyncio.sleep(0.01)
            driver.set_trace_callback(seen.append)
            try:
                assert writer.write_now(second)
            finally:
                driver.set_trace_callback(None)
        else:
            for rows in (_Rows.of(first), _Rows.of(second)):
                await store.database.transaction(
                    lambda conn, b=rows: store.executions._apply(conn, [b])
                )
    written = [s for s in seen if s.startswith(("UPDATE executions", "INSERT INTO nodes"))]
    # One UPDATE (the state kept), then the upsert, traced once per row.
    assert [s.split()[0] for s in written] == ["UPDATE", "INSERT", "INSERT"], written
    assert all('"error" = NULL' in s for s in written), written
    direct = _stored(tmp_path / "turns.db", "ex-direct")
    assert direct == _stored(tmp_path / "turns.db", "ex-sqlalchemy")
    (a, b) = await store.get_nodes("ex-direct")
    assert a.error is None and a.usage is None and a.wake_at is None and a.output == 3
    assert b.state == NodeState.RUNNING and b.error is None
    stored = await store.get_execution("ex-direct")
    assert stored is not None and stored.output is None and stored.usage is None


async def test_turns_written_at_once_do_not_ask_asyncio_for_the_loop_each_time(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`asyncio.get_running_loop()` makes a getpid() system call on CPython 3.11: write_now
    asked it three times a turn. It keeps the loop it found while that loop runs on this
    thread, and asks again once another loop runs."""
    from agentrun.storage import sqlite_writes

    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    monkeypatch.setattr(store.database, "_inline_pause", 0)
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 60.0)
    await store.create_execution(execution_record("ex-l", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    asked = []
    running = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        # Only the store's own asks: a finalizer the garbage collector runs meanwhile may ask
        # too (seen once under stress-ng --cpu 2: two asks, one of them not the store's).
        caller = sys._getframe(1).f_code.co_filename
        if caller == sqlite_writes.__file__:
            asked.append(caller)
        return running()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    await asyncio.sleep(0.01)  # no streak under way
    written = []
    for sequence in (1, 2, 3, 4):
        mine.last_sequence = sequence
        event = EventRecord("ex-l", sequence, "node.running", T0)
        written.append(writer.write_now(Batch(execution=mine, events=[event], fence=("r1", 1))))
    monkeypatch.undo()
    assert written == [True] * 4
    assert len(asked) <= 1, asked
    # A loop that no longer runs is not taken for the running one.
    other = asyncio.new_event_loop()
    monkeypatch.setattr(store.database, "_loop_now", other)
    try:
        assert store.database._running_loop() is asyncio.get_running_loop()
    finally:
        other.close()


async def test_turns_skip_reference_checks_other_writes_keep_them(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn's rows are its own execution's, written after its fenced UPDATE found that row:
    SQLite's reference checks (a lookup of the execution per node, event and signal) are off
    for turns (the write connection's PRAGMA foreign_keys, set only when it changes), and on
    again for any other write, where a row of an unknown execution is still refused."""
    import sqlalchemy as sa

    from agentrun.storage.base import StoreError

    claimed, writer = await _two_claimed(store, monkeypatch)
    database = store.database
    assert writer.write_now(_batch(claimed["ex-direct"], ("r1", 1)))
    assert database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    assert driver.execute("PRAGMA foreign_keys").fetchone() == (0,)

    def orphan(conn: sa.Connection) -> None:
        conn.execute(
            db.events.insert().values(
                execution_id="ex-nobody", sequence=1, type="node.running", time=T0
            )
        )

    with pytest.raises((StoreError, sa.exc.IntegrityError)):
        await database.transaction(orphan)
    driver = database._sync_conn.connection.driver_connection if database._sync_conn else None
    if driver is not None:
        assert driver.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert await store.list_events("ex-nobody") == []
    # And a stale turn still writes nothing at all (its UPDATE finds no row).
    stale = _batch(claimed["ex-sqlalchemy"], ("r2", 9))
    assert not writer.write_now(stale)
    assert await store.list_events("ex-sqlalchemy") == []


async def test_a_turn_with_a_row_of_another_execution_is_not_written_at_once(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_now writes a turn's rows without SQLite's reference checks only when every row
    is its own execution's (`_own_rows`): a node, an event, a consumed signal or a stored
    signal of another execution leaves the turn to the group commit, nothing written."""
    claimed, writer = await _two_claimed(store, monkeypatch)
    mine = claimed["ex-direct"]
    other = "ex-sqlalchemy"
    turns = [
        Batch(execution=mine, nodes=[NodeRecord(other, "a", NodeState.RUNNING)]),
        Batch(execution=mine, events=[EventRecord(other, 1, "node.running", T0)]),
        Batch(execution=mine, consumed_signals=[(other, 1, "a")]),
        Batch(execution=mine, signals=[SignalRecord(other, "go", 1, "s-1", T0)]),
    ]
    for batch in turns:
        batch.fence = ("r1", 1)
        await asyncio.sleep(0.01)  # a new streak: only the rows decide
        assert not writer.write_now(batch)
    assert await store.list_events(other) == []
    assert await store.get_nodes(other) == []
    stored = await store.get_execution("ex-direct")
    assert stored is not None and stored.last_sequence == 0


class _Recording:
    """A sqlite3 connection's stand-in for `write_turn`: records each statement and its
    parameters, every statement changing one row."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[object]]] = []
        self.rowcount = 1

    def cursor(self) -> _Recording:
        return self

    def execute(self, sql: str, params: object) -> _Recording:
        self.statements.append((sql, list(params)))  # type: ignore[call-overload]
        return self

    def executemany(self, sql: str, rows: object) -> _Recording:
        for params in rows:  # type: ignore[attr-defined]
            self.execute(sql, params)
        return self


def test_empty_vars_and_labels_are_literals_in_the_execution_update() -> None:
    """An execution's vars and labels, empty objects at nearly every turn, are '{}' literals
    in its UPDATE (the text bound before: the same stored value), not two text parameters;
    any other value is bound."""
    from agentrun.storage.sqlite_turns import write_turn

    record = execution_record("ex-e", **_SAME)
    record.state, record.last_sequence = ExecutionState.RUNNING, 3
    conn = _Recording()
    assert write_turn(Batch(execution=record, fence=("r1", 1)), conn)  # type: ignore[arg-type]
    ((sql, params),) = conn.statements
    assert "\"vars\" = '{}'" in sql and "\"labels\" = '{}'" in sql, sql
    assert "{}" not in params, params
    record.vars = {"n": 1}
    conn = _Recording()
    assert write_turn(Batch(execution=record, fence=("r1", 1)), conn)  # type: ignore[arg-type]
    ((sql, params),) = conn.statements
    assert '"vars" = ?' in sql and '{"n": 1}' in params and "{}" in params, (sql, params)


async def test_a_turn_that_only_moves_its_sequence_writes_its_events_with_the_read(
    store: SqlStore, tmp_path: Path
) -> None:
    """A turn that leaves its execution's row as stored but for its last sequence: its events
    go in with the fenced read of the row as their INSERT's condition, one statement (no read
    of its own before them); a stale fence finds no row there, and the turn writes nothing."""
    from agentrun.storage.sqlite_turns import write_turn

    await store.create_execution(execution_record("ex-m", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    mine.state, mine.started_at = ExecutionState.RUNNING, T0
    await store.commit(Batch(execution=mine, fence=("r1", 1)))
    conn = sqlite3.connect(tmp_path / "turns.db", isolation_level=None)
    try:
        statements: list[str] = []
        conn.set_trace_callback(statements.append)

        def turn(first: int, fence: tuple[str, int]) -> bool:
            mine.last_sequence = first + 1
            events = [EventRecord("ex-m", first + n, "x", T0, "a", {"n": n}) for n in (0, 1)]
            conn.execute("BEGIN IMMEDIATE")
            try:
                return write_turn(Batch(execution=mine, events=events, fence=fence), conn)
            finally:
                conn.execute("COMMIT")

        assert turn(1, ("r1", 1))
        (written,) = [sql for sql in statements if sql not in ("BEGIN IMMEDIATE", "COMMIT")]
        assert written.startswith("INSERT INTO events") and "WHERE EXISTS" in written, written
        assert not turn(3, ("r0", 1))
    finally:
        conn.close()
    assert [(e.sequence, e.data) for e in await store.list_events("ex-m")] == [
        (1, {"n": 0}),
        (2, {"n": 1}),
    ]
    stored = await store.get_execution("ex-m")
    assert stored is not None and stored.last_sequence == 2
