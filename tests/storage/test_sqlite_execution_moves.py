"""SQLite: a turn that only appends events to an unfinished execution (its state, output, vars,
labels, usage, times as stored) writes its rows without rewriting the execution's row
(migration 0026, sqlite_turns.py): the row keeps an older `last_sequence`, and every reader
takes the newest event's (`schema.FOLDED_LAST_SEQUENCE`): records read or listed, the restore
read, another store on the file, a claim (which writes the folded value into the row). The
fence still holds on both of the writer's paths; a turn that changes anything else, or of a
finished execution, rewrites the row. And the reason, counted: a page fewer a turn."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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
)
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqlite_turns import SqliteTurnWriter
from tests.storage.factories import execution_record
from tests.storage.sqlite_migrations import wal_frames
from tests.storage.sqlite_trace import statements

T0 = 1_700_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "moves.db"


@pytest.fixture
async def store(path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SqlStore]:
    from agentrun.storage import sqlite_writes

    # Turns written at once however slow this machine's commits are now.
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 60.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 60.0)
    store = await _open(path)
    try:
        yield store
    finally:
        await store.close()


async def _open(path: Path) -> SqlStore:
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    return store


async def _running(store: SqlStore, id: str = "ex-m") -> ExecutionRecord:
    """A running execution with its first event, claimed by r1 (epoch 1)."""
    record = execution_record(
        id, input={"x": 1}, created_at=T0, started_at=T0, vars={"v": 1}, last_sequence=1
    )
    await store.create_execution(record, [], [EventRecord(id, 1, "execution.running", T0)])
    (mine,) = await store.claim_executions("r1", lease_seconds=1e9, now=T0)
    return mine


def _step(record: ExecutionRecord, fence: bool = True, **changes: Any) -> Batch:
    """The next chain step of `record`: its node succeeded and two events; `changes` change the
    execution further."""
    n = record.last_sequence
    moved = dataclasses.replace(record, last_sequence=n + 2, **changes)
    node = NodeRecord(record.id, f"s{n:04d}", NodeState.SUCCEEDED, 1, output={"n": n})
    events = [
        EventRecord(record.id, n + 1, "node.succeeded", T0 + n, node.node_id, {"n": n}),
        EventRecord(record.id, n + 2, "node.ready", T0 + n, f"s{n + 2:04d}"),
    ]
    return Batch(
        moved, [node], events, fence=(record.owner or "", record.lease_epoch) if fence else None
    )


def _row(path: Path, id: str = "ex-m") -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    try:
        return tuple(
            conn.execute(
                "SELECT state, last_sequence, vars, owner, lease_epoch FROM executions WHERE id = ?",
                (id,),
            ).fetchone()
        )
    finally:
        conn.close()


async def test_a_turn_that_only_appends_events_leaves_the_row_and_reads_the_same(
    store: SqlStore, path: Path
) -> None:
    record = await _running(store)
    updates = statements(store, "UPDATE executions")
    writer = store.database.turn_writer()
    assert isinstance(writer, SqliteTurnWriter)
    for n in range(4):  # at once (`write_now`) and through the group commit's writer
        batch = _step(record)
        if n % 2:
            assert await writer([_Rows.of(batch)]) == [None]
        else:
            await store.commit(batch)
        record = batch.execution
        assert record is not None
    assert updates == []
    assert _row(path) == ("RUNNING", 1, '{"v": 1}', "r1", 1)  # the row as claimed
    assert record.last_sequence == 9

    assert await store.get_execution("ex-m") == record
    assert await store.list_executions("acme", limit=5) == [record]
    assert await store.list_unfinished_executions() == [record]
    restored = await store.restore_read("ex-m")
    assert restored is not None and restored[0] == record
    assert [e.sequence for e in await store.list_events("ex-m")] == list(range(1, 10))
    # Another store on the file (another process, or this one restarted) reads the same; a
    # claim takes the execution as it is, its folded sequence written into the row.
    other = await _open(path)
    try:
        assert await other.get_execution("ex-m") == record
        await store.release_leases("r1")
        (claimed,) = await other.claim_executions("r2", lease_seconds=10, now=T0 + 1)
        assert claimed == dataclasses.replace(
            record, owner="r2", lease_epoch=2, lease_expires_at=T0 + 11
        )
        assert _row(path) == ("RUNNING", 9, '{"v": 1}', "r2", 2)
    finally:
        await other.close()
    # r1's lease is gone: its next turn is refused on both paths, and writes nothing.
    with pytest.raises(LeaseLost):
        await store.commit(_step(record))
    assert await writer([_Rows.of(_step(record))]) == [UNWRITTEN]
    assert [e.sequence for e in await store.list_events("ex-m")][-1] == 9


async def test_a_turn_that_changes_more_or_ends_rewrites_the_row(
    store: SqlStore, path: Path
) -> None:
    """Vars, or the end, change the row: it is rewritten, with the turn's last sequence; a
    turn without a fence is written so too; the moves after a rewrite fold into it again."""
    record = await _running(store)
    updates = statements(store, "UPDATE executions")
    for changes in ({}, {"vars": {"v": 2}}, {}):
        batch = _step(record, **changes)
        await store.commit(batch)
        assert batch.execution is not None
        record = batch.execution
    assert len(updates) == 1 and _row(path)[1:3] == (5, '{"v": 2}'), updates
    assert await store.get_execution("ex-m") == record
    unfenced = _step(record, fence=False)
    await store.commit(unfenced)
    assert len(updates) == 1 and _row(path)[1] == 5
    ended = _step(unfenced.execution, state=ExecutionState.SUCCEEDED, ended_at=T0 + 99)  # type: ignore[arg-type]
    await store.commit(ended)
    assert _row(path)[:2] == ("SUCCEEDED", 11)
    assert await store.get_execution("ex-m") == ended.execution
    # A finished execution's turn rewrites its row even when nothing else changes: its
    # events may be deleted (retention), so the row keeps its sequence.
    late = _step(ended.execution)  # type: ignore[arg-type]
    await store.commit(late)
    assert _row(path)[:2] == ("SUCCEEDED", 13)


async def test_a_turn_that_only_appends_events_writes_a_page_fewer(
    store: SqlStore, path: Path
) -> None:
    """Counted in the WAL (4 KB pages, frames after a TRUNCATE checkpoint): 100 such turns,
    each a node row and two events. With the execution's row rewritten too: 509 frames (the
    row's page, the nodes' and events' leaves and their keys' indexes, splits); 409 without."""
    record = await _running(store)
    side = sqlite3.connect(path, isolation_level=None)
    try:
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for _ in range(100):
            batch = _step(record)
            await store.commit(batch)
            assert batch.execution is not None
            record = batch.execution
        frames = wal_frames(path)
        assert frames <= 460, frames
    finally:
        side.close()
    assert await store.get_execution("ex-m") == record
