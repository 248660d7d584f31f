"""Migration 0018 on a SQLite database in use at 0017: `nodes` becomes a WITHOUT ROWID table
with every row, its partial index and its reference to `executions` kept; the store reads and
writes it as before; the downgrade gives the rowid table back with the same rows. (0025 made
it a rowid table again at the head: rows over ~1 KB cost more pages WITHOUT ROWID.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agentrun.storage.records import Batch, NodeRecord, NodeState
from agentrun.storage.sql import SqlStore
from tests.storage.sqlite_migrations import migrate, query


def _fill(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for execution_id in ("e1", "e2"):
            conn.execute(
                "INSERT INTO executions (id, tenant, workflow, version, state, created_at) "
                "VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0)",
                (execution_id,),
            )
        for n in range(300):  # more than one page of rows
            conn.execute(
                "INSERT INTO nodes (execution_id, node_id, state, attempt, output, started_at,"
                " completed_order) VALUES (?, ?, 'SUCCEEDED', 1, ?, 2.5, ?)",
                (f"e{1 + n % 2}", f"n{n:03d}", f'{{"x": {n}}}', n),
            )
        conn.execute(
            "INSERT INTO nodes (execution_id, node_id, state, wait) "
            "VALUES ('e1', 'w', 'WAITING', '{\"signal\": \"go\"}')"
        )
    conn.close()


def _rows(path: Path) -> list[Any]:
    return query(path, "SELECT * FROM nodes ORDER BY execution_id, node_id")


def _table_sql(path: Path) -> str:
    return str(query(path, "SELECT sql FROM sqlite_master WHERE name = 'nodes'")[0][0])


async def test_nodes_become_without_rowid_and_keep_every_row(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    migrate(path, "0017")
    _fill(path)
    before = _rows(path)
    columns = query(path, "PRAGMA table_info(nodes)")
    assert "WITHOUT ROWID" not in _table_sql(path)

    store = SqlStore(f"sqlite+aiosqlite:///{path}")  # migrates to the head, as a server does
    await store.open()
    try:
        # The store writes and reads nodes on the rebuilt table.
        await store.commit(Batch(nodes=[NodeRecord("e2", "new", NodeState.RUNNING, attempt=1)]))
        nodes = {n.node_id: n for n in await store.get_nodes("e2")}
        assert nodes["new"].state is NodeState.RUNNING and len(nodes) == 151
    finally:
        await store.close()

    # At the head `nodes` is a rowid table again (0025: rows over ~1 KB cost more pages
    # WITHOUT ROWID); what 0018 alone makes is checked below.
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] != "new"] == before
    assert query(path, "PRAGMA table_info(nodes)") == columns
    assert query(path, "PRAGMA foreign_key_list(nodes)")[0][2:4] == ("executions", "execution_id")
    assert query(path, "PRAGMA foreign_key_check") == []
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    indexes = {row[1] for row in query(path, "PRAGMA index_list(nodes)")}
    assert "ix_nodes_pending_waits" in indexes
    plan = query(
        path,
        "EXPLAIN QUERY PLAN SELECT execution_id, node_id FROM nodes "
        "WHERE state = 'WAITING' AND wait IS NOT NULL",
    )
    assert any("ix_nodes_pending_waits" in row[-1] for row in plan), plan

    migrate(path, "0017", down=True)
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] != "new"] == before
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    migrate(path, "0018")  # and up again, from the downgraded form
    assert _table_sql(path).rstrip().endswith("WITHOUT ROWID")
    assert [r for r in _rows(path) if r[1] != "new"] == before
    migrate(path, "head")
    assert "WITHOUT ROWID" not in _table_sql(path)
    assert [r for r in _rows(path) if r[1] != "new"] == before
    assert query(path, "PRAGMA integrity_check") == [("ok",)]
