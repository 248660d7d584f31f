"""Migration 0007 on a SQLite database that was in use at 0006: every row stays, every payload
reads exactly as it read before (bare numbers SQLite had already converted included), and new
payloads keep their exact text from then on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import Batch, NodeRecord, NodeState
from agentrun.storage.sql import SqlStore
from tests.storage.sqlite_migrations import migrate, query

EXACT = 2.0662443630870376e-307
# What SQLite's NUMERIC affinity made of it at 0006.
CONVERTED = 2.0662443630870372e-307

TABLES = [
    "workflows",
    "executions",
    "nodes",
    "events",
    "signals",
    "sm_instances",
    "sm_history",
    "sm_timers",
]


def _payload_columns(path: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each table's key and the columns declared JSON, read from the database itself (not
    from the migration under test)."""
    found = {}
    for table in TABLES:
        info = query(path, f"PRAGMA table_info({table})")
        keys = tuple(name for _cid, name, *_r, pk in sorted(info, key=lambda r: r[5]) if pk)
        columns = tuple(name for _cid, name, kind, *_r in info if kind == "JSON")
        if columns:
            found[table] = (keys, columns)
    return found


def _fill(path: Path) -> None:
    """Rows as the store wrote them at 0006: payloads bound as their json.dumps text."""
    rows: dict[str, list[dict[str, Any]]] = {
        "workflows": [
            {
                "tenant": "t",
                "name": "wf",
                "version": 1,
                "spec": {"nodes": [1.5]},
                "description": "",
                "created_at": 1.0,
            }
        ],
        "executions": [
            {
                "id": "e1",
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "RUNNING",
                "input": EXACT,
                "output": 2**63 + 5,
                "error": None,
                "vars": {"v": [1, 2.5]},
                "labels": {"k": "v"},
                "usage": 1.0,
                "created_at": 1.0,
            },
            {
                "id": "e2",
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "SUCCEEDED",
                "input": "12",
                "output": -0.0,
                "error": {"type": "x"},
                "vars": None,
                "labels": None,
                "usage": 1.5e16,
                "created_at": 1.0,
            },
        ],
        "nodes": [
            {
                "execution_id": "e1",
                "node_id": "a",
                "state": "SUCCEEDED",
                "input": 0.1,
                "output": 1e308,
                "error": None,
                "usage": {"tokens": 3},
            }
        ],
        "events": [
            {"execution_id": "e1", "sequence": 1, "type": "node.running", "data": 7, "time": 1.0},
            {
                "execution_id": "e1",
                "sequence": 2,
                "type": "node.succeeded",
                "data": {"x": EXACT},
                "time": 1.0,
            },
        ],
        "signals": [
            {
                "execution_id": "e1",
                "seq": 1,
                "name": "go",
                "data": -(2**63) - 7,
                "signal_id": "s",
                "created_at": 1.0,
            }
        ],
        "sm_instances": [
            {
                "id": "i1",
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "ACTIVE",
                "current": "a",
                "data": {"n": 1},
                "input": 2**63 + 5,
                "error": None,
                "labels": {},
                "created_at": 1.0,
                "updated_at": 1.0,
            }
        ],
        "sm_history": [
            {
                "instance_id": "i1",
                "sequence": 1,
                "kind": "CREATED",
                "time": 1.0,
                "event": "start",
                "event_data": EXACT,
                "from_state": "a",
                "to_state": "a",
                "actions": [{"ok": True}],
                "assigned": {"x": 1.0},
                "instance_state": "ACTIVE",
                "error": None,
                "reentered": False,
            }
        ],
        "sm_timers": [
            {"instance_id": "i1", "key": "1:0", "state": "a", "timer_index": 0, "fire_at": 2.0}
        ],
    }
    payload_columns = _payload_columns(path)
    conn = sqlite3.connect(path)
    with conn:
        for table, table_rows in rows.items():
            payloads = payload_columns.get(table, ((), ()))[1]
            for row in table_rows:
                values = [
                    json.dumps(v) if k in payloads and v is not None else v for k, v in row.items()
                ]
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    values,
                )
    conn.close()


def _payloads(
    path: Path, json_type: sa.types.TypeEngine[Any], payload_columns: dict[str, Any]
) -> dict[tuple[Any, ...], Any]:
    """Every payload value, read through `json_type` as the store reads it."""
    engine = sa.create_engine(f"sqlite:///{path}")
    found: dict[tuple[Any, ...], Any] = {}
    try:
        with engine.connect() as conn:
            for table, (keys, columns) in payload_columns.items():
                view = sa.table(
                    table,
                    *(sa.column(k) for k in keys),
                    *(sa.column(c, json_type) for c in columns),
                )
                for row in conn.execute(sa.select(view)):
                    for column in columns:
                        value = row._mapping[column]
                        found[(table, *(row._mapping[k] for k in keys), column)] = (
                            type(value),
                            repr(value),
                        )
    finally:
        engine.dispose()
    return found


def _counts(path: Path) -> dict[str, int]:
    return {t: query(path, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


@pytest.fixture
def at_0006(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    migrate(path, "0006")
    _fill(path)
    return path


async def test_payloads_read_the_same_after_the_migration(at_0006: Path) -> None:
    counts = _counts(at_0006)
    payload_columns = _payload_columns(at_0006)
    assert len(payload_columns) == 7 and sum(len(c) for _k, c in payload_columns.values()) == 21
    # What the store read at 0006 (SQLAlchemy's JSON type on SQLite).
    before = _payloads(at_0006, sa.JSON(none_as_null=True), payload_columns)
    # The scenario is the real one: bare numbers had been converted as they were stored.
    assert query(at_0006, "SELECT typeof(input) FROM executions WHERE id = 'e1'") == [("real",)]
    assert before[("executions", "e1", "input")] == (float, repr(CONVERTED))
    assert before[("executions", "e2", "output")] == (int, "0")
    assert before[("executions", "e1", "output")] == (float, repr(float(2**63 + 5)))

    store = SqlStore(f"sqlite+aiosqlite:///{at_0006}")
    await store.open()
    try:
        assert (await store.get_execution("e1")).input == CONVERTED
        assert [e.data for e in await store.list_events("e1")] == [7, {"x": EXACT}]
        (entry,) = await store.instances.list_history("i1")
        assert entry.event_data == CONVERTED
        # Foreign keys are enforced again after the migration turned them off.
        with pytest.raises(KeyError):
            await store.commit(Batch(nodes=[NodeRecord("nope", "a", NodeState.RUNNING)]))
        # From now on a bare number keeps its exact text.
        await store.commit(Batch(nodes=[NodeRecord("e1", "b", NodeState.RUNNING, output=EXACT)]))
        assert {n.node_id: n.output for n in await store.get_nodes("e1")}["b"] == EXACT
    finally:
        await store.close()

    assert _counts(at_0006) == {**counts, "nodes": counts["nodes"] + 1}
    # An instance's input is in sm_inputs since 0021, its text as 0007 left it.
    moved = {("sm_instances", "i1", "input"): ("sm_inputs", "i1", "input")}
    payload_columns["sm_instances"] = (("id",), ("data", "error", "labels"))
    payload_columns["sm_inputs"] = (("instance_id",), ("input",))
    after = _payloads(at_0006, db.JsonText(), payload_columns)
    before = {moved.get(k, k): v for k, v in before.items()}
    assert {k: v for k, v in after.items() if k[:3] != ("nodes", "e1", "b")} == before
    declared = {
        (table, column): kind
        for table, (_keys, columns) in payload_columns.items()
        for _cid, column, kind, *_rest in query(at_0006, f"PRAGMA table_info({table})")
        if column in columns
    }
    assert set(declared.values()) == {"TEXT"}
    assert _payload_columns(at_0006) == {}  # no column is declared JSON any more
    stored_as = {
        row[0]
        for table, (_keys, columns) in payload_columns.items()
        for column in columns
        for row in query(at_0006, f"SELECT DISTINCT typeof({column}) FROM {table}")
    }
    assert stored_as <= {"text", "null"}
    assert query(at_0006, "PRAGMA foreign_key_check") == []


def test_the_migration_refuses_to_run_with_foreign_keys_on(at_0006: Path) -> None:
    """Rebuilding `executions` with foreign keys on would cascade to its nodes, events and
    signals; the migration stops before touching anything."""
    counts = _counts(at_0006)
    with pytest.raises(RuntimeError, match="foreign_keys"):
        migrate(at_0006, "0007", foreign_keys=True)
    assert _counts(at_0006) == counts
    assert query(at_0006, "SELECT version_num FROM alembic_version") == [("0006",)]


def test_downgrade_keeps_every_row(at_0006: Path) -> None:
    counts = _counts(at_0006)
    migrate(at_0006, "0007")
    migrate(at_0006, "0006", down=True)
    assert _counts(at_0006) == counts
    assert query(at_0006, "SELECT version_num FROM alembic_version") == [("0006",)]
    assert query(at_0006, "SELECT spec FROM workflows") == [('{"nodes": [1.5]}',)]
    assert {row[2] for row in query(at_0006, "PRAGMA table_info(events)") if row[1] == "data"} == {
        "JSON"
    }
