"""Migration 0020 on a SQLite database in use at 0018: `sm_history`'s event ids are unique by a
partial index (entries without an id are not in it), every row kept (0020 kept their rowids,
which the notification poller sought then; 0022 made the table WITHOUT ROWID, so the rows are
compared by key here); a repeated event id is still refused; the downgrade gives the full unique
index back with the same rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.machines import EntryKind, HistoryRecord, InstanceState, MachineBatch
from agentrun.storage.sql import SqlStore
from tests.storage.sqlite_migrations import migrate, query

NAME = "uq_sm_history_instance_id_event_id"


def _fill(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO sm_instances (id, tenant, workflow, version, state, current,"
            " created_at, updated_at, last_sequence) VALUES"
            " ('i1', 't', 'wf', 1, 'ACTIVE', 'a', 1.0, 1.0, 300)"
        )
        for n in range(1, 301):  # more than one page of rows, half with an event id
            conn.execute(
                "INSERT INTO sm_history (instance_id, sequence, kind, time, event, event_id,"
                " event_data, from_state, to_state, instance_state, reentered)"
                " VALUES ('i1', ?, 'TRANSITION', 1.0, 'GO', ?, ?, 'a', 'b', 'ACTIVE', 0)",
                (n, f"ev-{n}" if n % 2 else None, f'{{"n": {n}}}'),
            )
        conn.execute("DELETE FROM sm_history WHERE sequence IN (7, 8, 9)")  # rowid gaps
    conn.close()


def _rows(path: Path) -> list[Any]:
    return query(path, "SELECT * FROM sm_history ORDER BY instance_id, sequence")


def _index_sql(path: Path) -> str:
    rows = query(path, f"SELECT sql FROM sqlite_master WHERE name = '{NAME}'")
    return str(rows[0][0]) if rows else ""


def _entry(seq: int, event_id: str | None) -> HistoryRecord:
    return HistoryRecord("i1", seq, EntryKind.TRANSITION, 2.0, "GO", event_id, None, "a", "b")


async def test_event_ids_become_a_partial_index_and_every_row_stays(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    migrate(path, "0018")
    _fill(path)
    before = _rows(path)
    columns = query(path, "PRAGMA table_info(sm_history)")
    assert _index_sql(path) == ""  # a constraint of the table: an autoindex

    store = SqlStore(f"sqlite+aiosqlite:///{path}")  # migrates to the head, as a server does
    await store.open()
    machines = store.instances
    await machines.open()
    try:
        ids = {f"ev-{n}": n for n in range(1, 301, 2) if n not in (7, 9)}  # 7-9 deleted
        assert await machines.event_ids("i1") == ids
        record = await machines.get_instance("i1")
        assert record is not None and record.state is InstanceState.ACTIVE
        record.last_sequence = 302
        await machines.commit(MachineBatch(record, [_entry(301, None), _entry(302, "new")]))
        record.last_sequence = 303
        with pytest.raises(ValueError):  # an event id used already is refused, as before
            await machines.commit(MachineBatch(record, [_entry(303, "ev-1")]))
        history = await machines.list_history("i1", after_sequence=300)
        assert [(e.sequence, e.event_id) for e in history] == [(301, None), (302, "new")]
    finally:
        await machines.close()
        await store.close()

    assert _index_sql(path).endswith("WHERE event_id IS NOT NULL")
    # The columns 0018 had (later migrations may add some: 0023's entry_sequence).
    assert [r[: len(columns)] for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA table_info(sm_history)")[: len(columns)] == columns
    autoindexes = [r[1] for r in query(path, "PRAGMA index_list(sm_history)") if r[3] == "u"]
    assert autoindexes == [], autoindexes  # the primary key's is "pk"; no unique constraint
    assert query(path, "PRAGMA foreign_key_list(sm_history)")[0][2:5] == (
        "sm_instances",
        "instance_id",
        "id",
    )
    assert query(path, "PRAGMA foreign_key_check") == []
    assert query(path, "PRAGMA integrity_check") == [("ok",)]

    migrate(path, "0018", down=True)
    assert "WHERE" not in _index_sql(path)
    assert [r for r in _rows(path) if r[1] <= 300] == before
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "head")  # and up again, from the downgraded form
    assert _index_sql(path).endswith("WHERE event_id IS NOT NULL")
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
