"""Migration 0023 on a database in use at 0022, SQLite and PostgreSQL: `sm_history` gains
`entry_sequence` (NULL on every stored entry: nothing to fold, every instance reads as before);
the downgrade folds each instance's newest entry that carries one (past its row's
last_sequence) into the row, the values older code reads there, then drops the column. Up
again from there, every row and entry reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.sql import SqlStore

from .migration_steps import database_url, migrator, on

INSTANCE_COLUMNS = ("id", "current", "updated_at", "last_sequence", "entry_sequence", "data")
# What 0022 knew of an entry (the metadata has 0023's column too).
HISTORY_COLUMNS = [c.name for c in db.sm_history.c if c.name != "entry_sequence"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


_HISTORY_0022 = sa.table(
    "sm_history", *(sa.column(c.name, c.type) for c in db.sm_history.c if c.name in HISTORY_COLUMNS)
)


def _entry(id: str, seq: int, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "instance_id": id,
        "sequence": seq,
        "kind": "TRANSITION",
        "time": 100.0 + seq,
        "event": "GO",
        "event_id": f"ev-{seq}" if seq % 2 else None,
        "event_data": {"seq": seq},
        "from_state": "a",
        "to_state": to,
        "transition_index": 0,
        "actions": None,
        "assigned": None,
        "instance_state": "ACTIVE",
        "error": None,
        "reentered": False,
        **extra,
    }


def _fill(conn: sa.Connection) -> None:
    """Two instances at 0022: their rows as every commit wrote them, three entries each."""
    for n, id in enumerate(("i1", "i2")):
        conn.execute(
            db.sm_instances.insert(),
            {
                "id": id,
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": "ACTIVE",
                "current": "c",
                "data": {"n": n},
                "created_at": 1.0,
                "updated_at": 103.0,
                "last_sequence": 3,
                "entry_sequence": 2,
                "lease_epoch": 0,
            },
        )
        for seq, to in ((1, "a"), (2, "c"), (3, "c")):
            conn.execute(_HISTORY_0022.insert(), _entry(id, seq, to))


def _instances(conn: sa.Connection) -> list[tuple[Any, ...]]:
    t = db.sm_instances
    query = sa.select(*(t.c[name] for name in INSTANCE_COLUMNS)).order_by(t.c.id)
    return [tuple(row) for row in conn.execute(query)]


def _history(conn: sa.Connection) -> list[tuple[Any, ...]]:
    h = _HISTORY_0022
    query = sa.select(h).order_by(h.c.instance_id, h.c.sequence)
    return [tuple(row) for row in conn.execute(query)]


def _columns(conn: sa.Connection) -> list[str]:
    return [c["name"] for c in sa.inspect(conn).get_columns("sm_history")]


async def test_the_column_comes_and_goes_with_what_it_holds(url: str) -> None:
    await on(url, migrator("0022"))
    await on(url, _fill)
    instances, history = await on(url, _instances), await on(url, _history)

    await on(url, migrator("head"))
    assert "entry_sequence" in await on(url, _columns)
    assert await on(url, _instances) == instances
    assert await on(url, _history) == history
    store = SqlStore(url)
    await store.open()
    try:
        record = await store.instances.get_instance("i1")
        assert record is not None
        assert (record.current, record.last_sequence, record.entry_sequence) == ("c", 3, 2)
    finally:
        await store.close()

    # i1 moved twice more as SQLite's writer moves an instance (entries past the row, the
    # newest with the instance's entry_sequence); i2's newest entry past its row has none (a
    # row rewritten with it as the older code did leaves nothing to fold).
    def moved(conn: sa.Connection) -> None:
        conn.execute(
            db.sm_history.insert(),
            [
                _entry("i1", 4, "b", entry_sequence=4),
                _entry("i1", 5, "a", entry_sequence=5),
                _entry("i2", 4, "b", entry_sequence=None),
            ],
        )

    await on(url, moved)
    with_moves = await on(url, _history)

    await on(url, migrator("0022", down=True))
    assert "entry_sequence" not in await on(url, _columns)
    assert await on(url, _instances) == [
        ("i1", "a", 105.0, 5, 5, {"n": 0}),  # folded in
        instances[1],  # as it was
    ]
    assert await on(url, _history) == with_moves

    await on(url, migrator("head"))
    assert await on(url, _history) == with_moves
