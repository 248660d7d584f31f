"""Migration 0025 on a database in use at 0024, SQLite and PostgreSQL: `events`, `nodes` and
`sm_history` become rowid tables again on SQLite (0024, 0018 and 0022 had made them WITHOUT
ROWID), every row, index and reference kept; PostgreSQL's tables are as they were; the
downgrade gives the WITHOUT ROWID tables back with the same rows. And the reason, counted: a
WITHOUT ROWID table keeps only ~1,000 bytes of a row on its page, so a step whose output is
1 KB, or an instance's event whose data is, writes fewer WAL frames in a rowid table."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
)
from agentrun.storage.records import Batch, EventRecord, ExecutionState, NodeState
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record

from .migration_steps import database_url, migrator, on
from .sqlite_migrations import wal_frames

TABLES = ("events", "nodes", "sm_history")
BIG = "x" * 2000  # over what an index b-tree cell keeps on a 4 KiB page: overflow pages


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


def _fill(conn: sa.Connection) -> None:
    conn.execute(
        db.executions.insert(),
        [
            {
                "id": id,
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "RUNNING",
                "created_at": 1.0,
            }
            for id in ("e1", "e2")
        ],
    )
    conn.execute(
        db.sm_instances.insert(),
        [
            {
                "id": id,
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "ACTIVE",
                "current": "a",
                "created_at": 1.0,
                "updated_at": 1.0,
                "last_sequence": 200,
            }
            for id in ("i1", "i2")
        ],
    )
    # More than a page of rows each, interleaved; every seventh with a payload that overflows.
    data = [{"n": n, "body": BIG if n % 7 == 0 else ""} for n in range(201)]
    conn.execute(
        db.events.insert(),
        [
            {
                "execution_id": e,
                "sequence": n,
                "type": "node.succeeded",
                "node_id": f"n{n}",
                "data": data[n],
                "time": 2.5,
            }
            for n in range(1, 201)
            for e in ("e2", "e1")
        ],
    )
    conn.execute(
        db.nodes.insert(),
        [
            {
                "execution_id": e,
                "node_id": f"n{n:03d}",
                "state": "SUCCEEDED",
                "attempt": 1,
                "input": data[n],
                "output": data[n],
                "completed_order": n,
                "wait": None,
            }
            for n in range(1, 201)
            for e in ("e2", "e1")
        ]
        + [
            {
                "execution_id": "e1",
                "node_id": "w",
                "state": "WAITING",
                "attempt": 0,
                "input": None,
                "output": None,
                "completed_order": 0,
                "wait": {"signal": "go"},
            }
        ],
    )
    conn.execute(
        db.sm_history.insert(),
        [
            {
                "instance_id": i,
                "sequence": n,
                "kind": "TRANSITION",
                "time": 1.0,
                "event": "GO",
                "event_id": f"ev-{n}" if n % 2 else None,
                "event_data": data[n],
                "from_state": "a",
                "to_state": "b",
                "instance_state": "ACTIVE",
                "reentered": False,
            }
            for n in range(1, 201)
            for i in ("i2", "i1")
        ],
    )


def _rows(conn: sa.Connection) -> dict[str, list[Any]]:
    return {
        name: [
            tuple(row)
            for row in conn.execute(
                sa.select(table).order_by(*(c for c in table.primary_key.columns))
            )
        ]
        for name, table in (
            ("events", db.events),
            ("nodes", db.nodes),
            ("sm_history", db.sm_history),
        )
    }


def _layout(conn: sa.Connection) -> dict[str, Any]:
    """Each table's stored definition and indexes (SQLite), its checks; {} on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return {}
    found: dict[str, Any] = {
        name: (
            conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).scalar_one(),
            sorted(row[1] for row in conn.exec_driver_sql(f"PRAGMA index_list({name})")),
            [tuple(row) for row in conn.exec_driver_sql(f"PRAGMA foreign_key_list({name})")],
        )
        for name in TABLES
    }
    found["check"] = (
        conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall(),
        conn.exec_driver_sql("PRAGMA integrity_check").fetchall(),
    )
    return found


async def test_the_tables_become_rowid_tables_and_every_row_stays(url: str) -> None:
    await on(url, migrator("0024"))
    await on(url, _fill)
    rows, before = await on(url, _rows), await on(url, _layout)
    sqlite = url.startswith("sqlite")
    if sqlite:
        assert all(before[name][0].endswith("WITHOUT ROWID") for name in TABLES)

    await on(url, migrator("head"))
    assert await on(url, _rows) == rows
    after = await on(url, _layout)
    if sqlite:
        for name in TABLES:
            sql, indexes, references = after[name]
            assert "WITHOUT ROWID" not in sql, sql
            assert sql + " WITHOUT ROWID" == before[name][0]  # the same columns and key
            assert (indexes, references) == before[name][1:], name
        assert "ix_nodes_pending_waits" in after["nodes"][1]
        assert "uq_sm_history_instance_id_event_id" in after["sm_history"][1]
        assert after["check"] == ([], [("ok",)])

    store = SqlStore(url)  # the store reads and writes the rebuilt tables
    await store.open()
    try:
        events = await store.list_events("e1", after_sequence=197)
        assert [(e.sequence, e.data) for e in events] == [
            (198, {"n": 198, "body": ""}),
            (199, {"n": 199, "body": ""}),
            (200, {"n": 200, "body": ""}),
        ]
        record = await store.get_execution("e1")
        record.last_sequence = 201
        await store.commit(Batch(execution=record, events=[EventRecord("e1", 201, "x", 3.0)]))
        with pytest.raises(ValueError):  # a sequence stored already is still refused
            record.last_sequence = 202
            await store.commit(Batch(execution=record, events=[EventRecord("e1", 200, "x", 3.0)]))
        nodes = {n.node_id: n for n in await store.get_nodes("e1")}
        assert nodes["n007"].output == {"n": 7, "body": BIG} and len(nodes) == 201
        assert nodes["w"].state is NodeState.WAITING
        history = await store.instances.list_history("i1", after_sequence=195)
        assert [(h.sequence, h.event_id) for h in history] == [
            (196, None),
            (197, "ev-197"),
            (198, None),
            (199, "ev-199"),
            (200, None),
        ]
        assert history[0].event_data == {"n": 196, "body": BIG}
        assert (await store.instances.event_ids("i1"))["ev-199"] == 199
    finally:
        await store.close()
    rows = await on(url, _rows)

    await on(url, migrator("0024", down=True))
    assert await on(url, _rows) == rows
    if sqlite:
        assert await on(url, _layout) == before
    await on(url, migrator("head"))  # and up again, from the downgraded form
    assert await on(url, _rows) == rows
    assert await on(url, _layout) == after


async def test_a_step_with_a_1kb_output_writes_fewer_frames(tmp_path: Path) -> None:
    """Counted in the WAL (4 KB pages, frames after a TRUNCATE checkpoint): 100 commits of an
    execution (its row and three events, one the node.succeeded with a 1 KB output) wrote 538
    frames with `events` WITHOUT ROWID (0024: each output on an overflow page of its own
    beside the cell's first ~1,000 bytes), 399 in a rowid table (0025)."""
    path = tmp_path / "store.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    side = sqlite3.connect(path, isolation_level=None)
    try:
        record = execution_record("e1", tenant="t")
        record.state = ExecutionState.RUNNING
        await store.create_execution(record)
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        output = {"output": "x" * 1000}
        for step in range(100):
            events = [
                EventRecord("e1", 3 * step + n, "node.succeeded", 2.0, f"s{step}", data)
                for n, data in ((1, {"attempt": 1}), (2, output), (3, {"attempt": 1}))
            ]
            record.last_sequence = 3 * step + 3
            await store.commit(Batch(execution=record, events=events))
        assert wal_frames(path) <= 470, wal_frames(path)
    finally:
        side.close()
        await store.close()


async def test_an_event_with_1kb_of_data_writes_fewer_frames(tmp_path: Path) -> None:
    """Counted in the WAL: 100 events of one instance, each entry with 1 KB of event data,
    wrote 513 frames with `sm_history` WITHOUT ROWID (0022), 367 in a rowid table (0025)."""
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
            entry = HistoryRecord(
                "i1", seq, EntryKind.TRANSITION, 2.0, "GO", None, {"body": "x" * 1000}, "a", "b"
            )
            await machines.commit(MachineBatch(record, [entry]))
        assert wal_frames(path) <= 440, wal_frames(path)
    finally:
        side.close()
        await machines.close()
        await store.close()
