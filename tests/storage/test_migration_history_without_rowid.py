"""Migration 0022 on a SQLite database in use at 0021: `sm_history` is a WITHOUT ROWID table,
every row kept, its partial index of event ids made again (a repeated id still refused); the
downgrade gives a rowid table back with the same rows. And the reason it gave, counted: a tiny
event writes two b-tree pages WITHOUT ROWID (its instance's row, its history entry), not three
(the history's rowid b-tree and its primary key's index); 0025 undid it for entries over ~1 KB
(the head is a rowid table)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
)
from agentrun.storage.sql import SqlStore
from tests.storage.sqlite_migrations import migrate, query, wal_frames

INDEX = "uq_sm_history_instance_id_event_id"


def _fill(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for id in ("i1", "i2"):
            conn.execute(
                "INSERT INTO sm_instances (id, tenant, workflow, version, state, current,"
                " created_at, updated_at, last_sequence) VALUES"
                " (?, 't', 'wf', 1, 'ACTIVE', 'a', 1.0, 1.0, 300)",
                (id,),
            )
        for n in range(1, 301):  # more than a page of rows, interleaved, half with an id
            for id in ("i2", "i1"):
                conn.execute(
                    "INSERT INTO sm_history (instance_id, sequence, kind, time, event,"
                    " event_id, event_data, from_state, to_state, instance_state, reentered)"
                    " VALUES (?, ?, 'TRANSITION', 1.0, 'GO', ?, ?, 'a', 'b', 'ACTIVE', 0)",
                    (id, n, f"ev-{n}" if n % 2 else None, f'{{"n": {n}}}'),
                )
    conn.close()


def _rows(path: Path) -> list[Any]:
    return query(path, "SELECT * FROM sm_history ORDER BY instance_id, sequence")


def _table_sql(path: Path) -> str:
    return str(query(path, "SELECT sql FROM sqlite_master WHERE name = 'sm_history'")[0][0])


def _entry(id: str, seq: int, event_id: str | None = None) -> HistoryRecord:
    return HistoryRecord(id, seq, EntryKind.TRANSITION, 2.0, "GO", event_id, None, "a", "b")


async def test_history_becomes_without_rowid_and_every_row_stays(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    migrate(path, "0021")
    _fill(path)
    before = _rows(path)
    columns = query(path, "PRAGMA table_info(sm_history)")
    assert "WITHOUT ROWID" not in _table_sql(path)

    store = SqlStore(f"sqlite+aiosqlite:///{path}")  # migrates to the head, as a server does
    await store.open()
    machines = store.instances
    await machines.open()
    try:
        assert await machines.event_ids("i1") == {f"ev-{n}": n for n in range(1, 301, 2)}
        history = await machines.list_history("i2", after_sequence=298)
        assert [e.sequence for e in history] == [299, 300]
        record = await machines.get_instance("i1")
        assert record is not None
        record.last_sequence = 301
        await machines.commit(MachineBatch(record, [_entry("i1", 301, "new")]))
        record.last_sequence = 302
        with pytest.raises(ValueError):  # an event id used already is refused, as before
            await machines.commit(MachineBatch(record, [_entry("i1", 302, "ev-1")]))
    finally:
        await machines.close()
        await store.close()

    # At the head `sm_history` is a rowid table again (0025: entries over ~1 KB cost more
    # pages WITHOUT ROWID); what 0022 alone makes is checked below.
    assert "WITHOUT ROWID" not in _table_sql(path)
    # The columns 0021 had (later migrations may add some: 0023's entry_sequence).
    assert [r[: len(columns)] for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA table_info(sm_history)")[: len(columns)] == columns
    index = query(path, f"SELECT sql FROM sqlite_master WHERE name = '{INDEX}'")
    assert str(index[0][0]).endswith("WHERE event_id IS NOT NULL")
    assert query(path, "PRAGMA foreign_key_list(sm_history)")[0][2:5] == (
        "sm_instances",
        "instance_id",
        "id",
    )
    assert query(path, "PRAGMA foreign_key_check") == []
    assert query(path, "PRAGMA integrity_check") == [("ok",)]

    migrate(path, "0021", down=True)
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "0022")  # and up again, from the downgraded form
    assert _table_sql(path).endswith("WITHOUT ROWID")
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "head")
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


async def test_a_tiny_event_writes_three_btree_pages(tmp_path: Path) -> None:
    """Counted in the WAL (4 KB pages, frames after a TRUNCATE checkpoint): 100 events of one
    instance, entries without data, wrote 303 frames with the history's rowid b-tree and key
    index, 203 WITHOUT ROWID (0022). 0025 made `sm_history` a rowid table again and pays this
    page for tiny entries: with 1 KB of event data the rowid table writes fewer
    (test_migration_rowid_tables_again.py)."""
    path = tmp_path / "store.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    machines = store.instances
    await machines.open()
    side = sqlite3.connect(path, isolation_level=None)
    try:
        record = InstanceRecord(
            id="i1",
            tenant="t",
            workflow="wf",
            version=1,
            state=InstanceState.ACTIVE,
            current="a",
            data={},
            input=None,
            created_at=1.0,
            updated_at=1.0,
        )
        await machines.create_instance(record)
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for seq in range(1, 101):
            record.last_sequence = seq
            await machines.commit(MachineBatch(record, [_entry("i1", seq)]))
        frames = wal_frames(path)
        assert frames <= 330, frames
    finally:
        side.close()
        await machines.close()
        await store.close()
