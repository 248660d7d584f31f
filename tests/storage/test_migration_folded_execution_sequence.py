"""Migration 0026 on SQLite and PostgreSQL: nothing to upgrade (every row stored before is
exact); the downgrade writes into each execution's row the sequence its readers fold in (its
newest event's, when past the row's `last_sequence`: what SQLite's turns that only append
events leave), what the older code reads there. Up again, every row reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.sql import SqlStore

from .migration_steps import database_url, migrator, on


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


def _fill(conn: sa.Connection) -> None:
    """ex-1: its row behind its newest event (as SQLite's writer leaves it); ex-2: exact;
    ex-3: no events at all."""
    for id, last, events in (("ex-1", 2, 5), ("ex-2", 3, 3), ("ex-3", 0, 0)):
        conn.execute(
            db.executions.insert(),
            {
                "id": id,
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "RUNNING",
                "input": {"i": id},
                "created_at": 1.0,
                "last_sequence": last,
                "lease_epoch": 0,
            },
        )
        for seq in range(1, events + 1):
            conn.execute(
                db.events.insert(),
                {"execution_id": id, "sequence": seq, "type": "node.ready", "time": 2.0},
            )


def _rows(conn: sa.Connection) -> list[tuple[Any, ...]]:
    t = db.executions
    query = sa.select(t.c.id, t.c.last_sequence, t.c.input).order_by(t.c.id)
    return [tuple(row) for row in conn.execute(query)]


async def test_the_downgrade_writes_the_folded_sequence(url: str) -> None:
    await on(url, migrator("0025"))
    await on(url, migrator("head"))
    await on(url, _fill)
    store = SqlStore(url)
    await store.open()
    try:
        folded = {r.id: r.last_sequence for r in await store.list_executions("t", limit=5)}
    finally:
        await store.close()
    # SQLite's readers fold; PostgreSQL's turns always write the row, read as it is.
    assert folded == {"ex-1": 5 if url.startswith("sqlite") else 2, "ex-2": 3, "ex-3": 0}

    await on(url, migrator("0025", down=True))
    assert await on(url, _rows) == [
        ("ex-1", 5, {"i": "ex-1"}),
        ("ex-2", 3, {"i": "ex-2"}),
        ("ex-3", 0, {"i": "ex-3"}),
    ]
    await on(url, migrator("head"))
    assert [row[1] for row in await on(url, _rows)] == [5, 3, 0]
