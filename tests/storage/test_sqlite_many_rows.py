"""SQLite's turn writer writes a group's rows of one table as multi-row INSERTs (`ManyRows`,
sqlite_rows.py), not one statement per row, and stores what one statement per row stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.executions import _Rows
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqldb_sqlite import SqliteDatabase
from agentrun.storage.sqlite_rows import MAX_ROWS, ManyRows
from agentrun.storage.sqlite_turns import SqliteTurnWriter
from tests.storage.factories import execution_record
from tests.storage.test_sqlite_turns import _SAME, T0, _start_records, _turn


def test_many_rows_are_few_statements_of_a_few_sizes_in_order() -> None:
    """Rows go in their order, at most MAX_ROWS a statement, in statements of few sizes (the
    connection's statement cache keeps each), a multi-row upsert's later row updates the one
    before it, as one statement per row does, and a refused row leaves the rows before it."""
    many = ManyRows('INSERT INTO t ("k", "v") VALUES (?, ?) ON CONFLICT ("k") DO UPDATE SET v = 1')
    sizes: set[int] = set()
    for n in range(1, 150):
        params = [(i, -i) for i in range(n)]
        chunks = list(many.chunks(params))
        assert sum(count for _, _, count in chunks) == n
        assert len(chunks) <= n // MAX_ROWS + 3
        flat = [v for _, values, _ in chunks for v in values]
        assert flat == [v for row in params for v in row]
        for sql, _, count in chunks:
            assert sql.count("(?, ?)") == count and sql.endswith("DO UPDATE SET v = 1")
            sizes.add(count)
    assert max(sizes) == MAX_ROWS and len(sizes) <= 18
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k PRIMARY KEY, v)")
    ManyRows("INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v").run(
        conn, [(1, "a"), (2, "b"), (1, "c")]
    )
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [(1, "c"), (2, "b")]
    # A refused row (OR FAIL) ends its statement and leaves the rows before it.
    with pytest.raises(sqlite3.IntegrityError):
        ManyRows("INSERT INTO t (k, v) VALUES (?, ?)").run(conn, [(3, "d"), (1, "e"), (4, "f")])
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [
        (1, "c"),
        (2, "b"),
        (3, "d"),
    ]
    with pytest.raises(ValueError):
        ManyRows("INSERT INTO t (k, v) VALUES (?, (SELECT 1))")


@pytest.fixture
async def stores(tmp_path: Path) -> Any:
    opened = []
    for name in ("many", "one"):
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/{name}.db")
        await store.open()
        opened.append(store)
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def _group(claimed: dict[str, Any]) -> list[_Rows]:
    """40 starts (one with a request id stored before, one repeating another's in the group)
    among turns of claimed executions."""
    starts = [
        _start_records(f"ex-s{i}", "used" if i == 5 else "req-3" if i == 7 else f"req-{i}")
        for i in range(40)
    ]
    starts[9].create.request_id = None  # type: ignore[union-attr]
    turns = [_turn(claimed[f"ex-t{i}"], ("r1", 1)) for i in range(6)]
    return [*starts[:20], *turns[:3], *starts[20:], *turns[3:]]


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as SQLite holds them (quote(): type and value), in rowid order where
    the table has one."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        ]
        out = {}
        for table in tables:
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            quoted = ", ".join(f'quote("{n}")' for n in names)
            try:
                rows = conn.execute(f"SELECT rowid, {quoted} FROM {table} ORDER BY rowid")
            except sqlite3.OperationalError:  # WITHOUT ROWID
                every = ", ".join(str(i + 1) for i in range(len(names)))
                rows = conn.execute(f"SELECT {quoted} FROM {table} ORDER BY {every}")
            out[table] = rows.fetchall()
        return out
    finally:
        conn.close()


def _one_per_row(
    self: ManyRows, params: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, Sequence[Any], int]]:
    """`ManyRows.chunks` as the writer was before it: one statement per row."""
    for row in params:
        yield self.sql, row, 1


async def test_a_group_stores_what_one_statement_per_row_stores(
    stores: list[SqlStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same group (starts, one with a used request id and one repeating another's, among
    turns) written with multi-row statements and with one statement per row: the same answers,
    the same rows in every table in the same order."""
    answers = []
    for store in stores:
        used = execution_record("ex-used", **_SAME)
        used.request_id, used.request_hash = "used", "h"
        await store.create_execution(used)
        for i in range(6):
            await store.create_execution(execution_record(f"ex-t{i}", **_SAME))
        claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
        writer = store.database.turn_writer()
        assert isinstance(writer, SqliteTurnWriter)
        with monkeypatch.context() as patch:
            if store is stores[1]:
                patch.setattr(ManyRows, "chunks", _one_per_row)
            got = await writer(_group(claimed))
        assert got is not None
        answers.append([a if a is UNWRITTEN or a is None else (a[0].id, a[1]) for a in got])
    assert answers[0] == answers[1]
    unwritten = [i for i, answer in enumerate(answers[0]) if answer is UNWRITTEN]
    assert unwritten == [5, 7], answers[0]  # the used request id, the repeated one
    many, one = _dump(tmp_path / "many.db"), _dump(tmp_path / "one.db")
    assert len(many["executions"]) == 7 + 38 and len(many["events"]) == 2 * (38 + 6)
    assert many == one


async def test_a_group_of_starts_is_one_insert_per_table(stores: list[SqlStore]) -> None:
    """Eight starts (two nodes and two events each) in one group commit: one INSERT each for
    their executions, nodes and events (40 before, one a row: sqlite3 released the GIL around
    each)."""
    store = stores[0]
    database = store.database
    assert isinstance(database, SqliteDatabase) and database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    writer = database.turn_writer()
    seen: list[str] = []
    driver.set_trace_callback(seen.append)
    try:
        got = await writer([_start_records(f"ex-{i}", f"req-{i}") for i in range(8)])
    finally:
        driver.set_trace_callback(None)
    assert got is not None and all(a is not UNWRITTEN for a in got)
    inserts = [s.split(" (")[0] for s in seen if s.startswith("INSERT")]
    assert inserts == [f"INSERT OR FAIL INTO {t}" for t in ("executions", "nodes", "events")]
    assert len(await store.list_events("ex-7")) == 2
