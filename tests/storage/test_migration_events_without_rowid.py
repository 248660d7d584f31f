"""Migration 0024 on a SQLite database in use at 0023: `events` becomes a WITHOUT ROWID table,
every row and its reference to `executions` kept; the store reads and appends as before (a
sequence stored already still refused); the downgrade gives a rowid table back with the same
rows. And the reason it gave, counted: a step's tiny events write one b-tree's pages WITHOUT
ROWID, not two; 0025 undid it for events over ~1 KB (the head is a rowid table)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.records import Batch, EventRecord, ExecutionState
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record
from tests.storage.sqlite_migrations import migrate, query, wal_frames


def _fill(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for execution_id in ("e1", "e2"):
            conn.execute(
                "INSERT INTO executions (id, tenant, workflow, version, state, created_at,"
                " last_sequence) VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0, 300)",
                (execution_id,),
            )
        for n in range(1, 301):  # more than a page of rows, interleaved
            for execution_id in ("e2", "e1"):
                conn.execute(
                    "INSERT INTO events (execution_id, sequence, type, node_id, data, time)"
                    " VALUES (?, ?, 'node.succeeded', ?, ?, 2.5)",
                    (execution_id, n, f"n{n}" if n % 2 else None, f'{{"x": {n}}}'),
                )
    conn.close()


def _rows(path: Path) -> list[Any]:
    return query(path, "SELECT * FROM events ORDER BY execution_id, sequence")


def _table_sql(path: Path) -> str:
    return str(query(path, "SELECT sql FROM sqlite_master WHERE name = 'events'")[0][0])


async def test_events_become_without_rowid_and_every_row_stays(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    migrate(path, "0023")
    _fill(path)
    before = _rows(path)
    columns = query(path, "PRAGMA table_info(events)")
    assert "WITHOUT ROWID" not in _table_sql(path)

    store = SqlStore(f"sqlite+aiosqlite:///{path}")  # migrates to the head, as a server does
    await store.open()
    try:
        events = await store.list_events("e1", after_sequence=297)
        assert [(e.sequence, e.node_id, e.data) for e in events] == [
            (298, None, {"x": 298}),
            (299, "n299", {"x": 299}),
            (300, None, {"x": 300}),
        ]
        record = await store.get_execution("e1")
        record.last_sequence = 301
        await store.commit(Batch(execution=record, events=[EventRecord("e1", 301, "x", 3.0)]))
        record.last_sequence = 302
        with pytest.raises(ValueError):  # a sequence stored already is refused, as before
            await store.commit(Batch(execution=record, events=[EventRecord("e1", 300, "x", 3.0)]))
    finally:
        await store.close()

    # At the head `events` is a rowid table again (0025: rows over ~1 KB cost more pages
    # WITHOUT ROWID); what 0024 alone makes is checked below.
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA table_info(events)") == columns
    assert query(path, "PRAGMA index_list(events)") == [
        (0, "sqlite_autoindex_events_1", 1, "pk", 0)
    ]
    assert query(path, "PRAGMA foreign_key_list(events)")[0][2:5] == (
        "executions",
        "execution_id",
        "id",
    )
    assert query(path, "PRAGMA foreign_key_check") == []
    assert query(path, "PRAGMA integrity_check") == [("ok",)]

    migrate(path, "0023", down=True)
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "SELECT count(*) FROM events") == [(601,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "0024")  # and up again, from the downgraded form
    assert _table_sql(path).endswith("WITHOUT ROWID")
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "SELECT count(*) FROM events") == [(601,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "head")
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert query(path, "SELECT count(*) FROM events") == [(601,)]


async def test_a_steps_tiny_events_write_two_btrees(tmp_path: Path) -> None:
    """Counted in the WAL (4 KB pages, frames after a TRUNCATE checkpoint): 100 commits of an
    execution (its row and three events of ~10 bytes of data, as a chain step has) wrote 309
    frames with the events' rowid b-tree and key index, 230 WITHOUT ROWID (0024). 0025 made
    `events` a rowid table again and pays this page for tiny events: with a 1 KB output the
    rowid table writes fewer (test_migration_rowid_tables_again.py)."""
    path = tmp_path / "store.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    side = sqlite3.connect(path, isolation_level=None)
    try:
        record = execution_record("e1", tenant="t")
        record.state = ExecutionState.RUNNING
        await store.create_execution(record)
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for step in range(100):
            events = [
                EventRecord("e1", 3 * step + n, "node.succeeded", 2.0, f"s{step}", {"x": step})
                for n in (1, 2, 3)
            ]
            record.last_sequence = 3 * step + 3
            await store.commit(Batch(execution=record, events=events))
        frames = wal_frames(path)
        assert frames <= 330, frames
    finally:
        side.close()
        await store.close()
