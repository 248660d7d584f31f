"""Migration 0021 on a database in use at 0020, SQLite and PostgreSQL: every instance's input
moves to `sm_inputs` (none for an instance without one) and reads back the same through the
store; the downgrade puts the inputs back in `sm_instances.input`. And the reason for the move,
counted on SQLite: an event of an instance with a large input writes the WAL pages of one
without."""

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
from agentrun.storage.sql import SqlStore

from .migration_steps import database_url, migrator, on
from .sqlite_migrations import wal_frames

BIG = {"text": "x" * 50_000, "n": [1.5, 2**63 + 5]}
# Stored as 0020's store wrote them: JSON text on SQLite, JSONB on PostgreSQL.
INPUTS: dict[str, Any] = {"i1": BIG, "i2": None, "i3": "12", "i4": 0.1}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


def _fill(conn: sa.Connection) -> None:
    # The column as 0020 had it (the metadata no longer does), its JSON as the store bound it.
    instances = sa.table(
        "sm_instances",
        *(sa.column(c.name, c.type) for c in db.sm_instances.c),
        sa.column("input", db.Json),
    )
    for n, (id, given) in enumerate(INPUTS.items()):
        conn.execute(
            instances.insert(),
            {
                "id": id,
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "ACTIVE",
                "current": "a",
                "data": {"n": n},
                "input": given,
                "created_at": 1.0,
                "updated_at": 1.0,
                "last_sequence": 0,
                "entry_sequence": 0,
                "lease_epoch": 0,
            },
        )
    # A timer drives i1 (claim takes it).
    conn.execute(
        db.sm_timers.insert(),
        {"instance_id": "i1", "key": "0:0", "state": "a", "timer_index": 0, "fire_at": 5.0},
    )


def _stored_inputs(conn: sa.Connection) -> dict[str, Any]:
    view = sa.table("sm_instances", sa.column("id"), sa.column("input", db.Json))
    return {row.id: row.input for row in conn.execute(sa.select(view))}


def _columns(conn: sa.Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns("sm_instances")}


async def test_inputs_move_to_their_table_and_read_the_same(url: str) -> None:
    await on(url, migrator("0020"))
    await on(url, _fill)
    assert await on(url, _stored_inputs) == INPUTS

    store = SqlStore(url)  # migrates to the head, as a server does
    await store.open()
    machines = store.instances
    await machines.open()
    try:
        for id, given in INPUTS.items():
            record = await machines.get_instance(id)
            assert record is not None and record.input == given, id
        listed = await machines.list_instances("t", limit=10)
        assert {r.id: r.input for r in listed} == INPUTS
        claimed = await machines.claim("r1", lease_seconds=30.0, now=2.0, limit=10)
        assert [(r.id, r.input) for r in claimed] == [("i1", BIG)]
        taken = await machines.acquire("i3", "r1", lease_seconds=30.0, now=2.0, take=True)
        assert taken is not None and taken.input == "12"
    finally:
        await machines.close()
        await store.close()

    def moved(conn: sa.Connection) -> tuple[set[str], dict[str, Any]]:
        i = db.sm_inputs
        rows = conn.execute(sa.select(i.c.instance_id, i.c.input))
        return _columns(conn), {row.instance_id: row.input for row in rows}

    columns, inputs = await on(url, moved)
    assert "input" not in columns
    assert inputs == {k: v for k, v in INPUTS.items() if v is not None}

    await on(url, migrator("0020", down=True))
    assert await on(url, _stored_inputs) == INPUTS
    await on(url, migrator("head"))  # and up again, from the downgraded form
    store = SqlStore(url)
    await store.open()
    try:
        assert (await store.instances.get_instance("i1")).input == BIG  # type: ignore[union-attr]
    finally:
        await store.close()


def _entry(id: str, seq: int) -> HistoryRecord:
    return HistoryRecord(id, seq, EntryKind.TRANSITION, 2.0, "GO", None, None, "a", "b")


async def test_an_event_does_not_rewrite_a_large_input(tmp_path: Path) -> None:
    """SQLite rewrites a row whose size changed whole, a large input's overflow pages with it
    (12 of them for 50 KB): events of an instance with one wrote ~10 WAL pages, not ~3."""
    path = tmp_path / "store.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    machines = store.instances
    await machines.open()
    side = sqlite3.connect(path, isolation_level=None)
    try:
        frames = {}
        for id, given in (("small", None), ("large", BIG)):
            await _create(machines, id, given)
            record = await machines.get_instance(id)
            assert record is not None
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            for seq in range(1, 11):  # `data` grows: the row's size changes every event
                record.data = {"s": "x" * seq}
                record.last_sequence = seq
                await machines.commit(MachineBatch(record, [_entry(id, seq)]))
            frames[id] = wal_frames(path)
        assert frames["large"] <= frames["small"] + 2, frames
    finally:
        side.close()
        await machines.close()
        await store.close()


async def _create(machines: Any, id: str, given: Any) -> None:
    record = InstanceRecord(
        id=id,
        tenant="t",
        workflow="wf",
        version=1,
        state=InstanceState.ACTIVE,
        current="a",
        data={},
        input=given,
        created_at=1.0,
        updated_at=1.0,
    )
    await machines.create_instance(record)
