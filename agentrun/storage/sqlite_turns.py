"""Engine turns on SQLite straight through sqlite3: the group commit's `direct` writer.

Through the transaction's way (`SqlExecutions._apply`) a group of turns went through
SQLAlchemy's connection and transaction objects, a statement lookup and a cursor per
statement, and the merge of every batch's rows, on the loop's thread for each small group:
more CPU than the statements themselves. Here the group is one transaction on the write
connection's sqlite3 handle (`SqliteDatabase.turn_transaction`: on the loop's thread or in
the writer thread, as any group commit), with plain SQL built once per column shape (sqlite3's
statement cache keeps each compiled):
- each batch's execution UPDATE, the fence folded in (`... AND owner = ? AND lease_epoch = ?`),
  its row count read: a batch whose row did not change (a stale fence, an unknown execution)
  writes nothing else;
- the node upserts, event INSERTs and consumed signals of the batches whose UPDATE held, each
  one `executemany` for the group.

The values are encoded by the columns' own bind processors (`RowEncoder`, as SQLAlchemy binds
them) and the statements name the same columns as the transaction's way: the rows written are
the same. Which batches it covers is PostgreSQL's rule (pg_turns.py `covered_batches`), less new
executions (rare: one per run): those, a batch whose row did not change, and what the rule
leaves out are answered UNWRITTEN, and the group commit writes them the transaction's way,
which refuses a stale batch with LeaseLost and an unknown execution with KeyError, as ever.
A statement SQLite refuses (a duplicate event) is rolled back with everything before it: the
whole group then goes the transaction's way, which finds whose batch it was.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from agentrun.storage import schema as db
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.pg_turns import TurnRows, covered_batches, turn_result
from agentrun.storage.sqldb_sqlite import RowEncoder, SqliteDatabase

__all__ = ["SqliteTurnWriter"]

_DIALECT = SQLiteDialect_pysqlite()
_NODE_KEYS = tuple(c.name for c in db.nodes.primary_key.columns)


class SqliteTurnWriter:
    """The group commit's `direct` writer for executions on SQLite (see module doc)."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def __call__(self, batches: Sequence[TurnRows]) -> list[Any] | None:
        """Writes the covered batches in one transaction; each batch's result (None: written,
        UNWRITTEN: not written), or None when SQLite refused a statement (nothing written).
        StoreError when the database is unavailable."""
        covered = [
            yes and batch.create is None
            for batch, yes in zip(batches, covered_batches(batches), strict=True)
        ]
        mine = [batch for batch, yes in zip(batches, covered, strict=True) if yes]
        if not mine:
            return [UNWRITTEN] * len(batches)
        try:
            done = await self._database.turn_transaction(
                functools.partial(write_turns, mine), items=len(mine)
            )
        except sqlite3.Error:
            return None  # rolled back: the transaction's way finds whose batch it was
        if done is None:
            return None
        return [turn_result(b, yes, done, set()) for b, yes in zip(batches, covered, strict=True)]


def write_turns(batches: Sequence[TurnRows], conn: sqlite3.Connection) -> set[str] | None:
    """Writes `batches` (each an UPDATE of its own execution, with rows of that execution
    only) inside the caller's transaction; the ids of the executions written, or None when the
    rows differ in shape (nothing written then: the transaction's way takes them)."""
    done: set[str] = set()
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    consumed: list[dict[str, Any]] = []
    for batch in batches:
        row = batch.execution
        assert row is not None
        fence = batch.fence
        sql, encoder = _update(tuple(row), fence is not None)
        params = encoder.params((row,))[0]
        if fence is not None:
            params = (*params, *fence)
        if conn.execute(sql, params).rowcount != 1:
            continue  # stale or unknown: nothing of this batch
        done.add(row["b_id"])
        for node in batch.nodes:
            nodes[(node["execution_id"], node["node_id"])] = node
        events += batch.events
        consumed += batch.consumed
    if nodes and not _many(conn, _upsert_nodes, list(nodes.values())):
        return None
    if events and not _many(conn, _insert_events, events):
        return None
    if consumed:
        conn.executemany(_CONSUME, [(c["b_node"], c["b_execution"], c["b_seq"]) for c in consumed])
    return done


def _many(
    conn: sqlite3.Connection,
    statement: Callable[[tuple[str, ...]], tuple[str, RowEncoder]],
    rows: list[dict[str, Any]],
) -> bool:
    """One executemany of `statement` for rows of one shape; False (nothing run) otherwise."""
    names = tuple(rows[0])
    if any(tuple(row) != names for row in rows[1:]):
        return False
    sql, encoder = statement(names)
    conn.executemany(sql, encoder.params(rows))
    return True


def _encoder(table: sa.Table, names: Sequence[str]) -> RowEncoder:
    return RowEncoder(names, [table.c[name].type for name in names], _DIALECT)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _marks(names: Sequence[str]) -> str:
    return ", ".join(["?"] * len(names))


@functools.cache
def _update(names: tuple[str, ...], fenced: bool) -> tuple[str, RowEncoder]:
    """The execution UPDATE for a row of these keys (`b_id` names the row, the rest are the
    columns it changes); fenced: the owner and epoch follow as two more parameters."""
    columns = [name for name in names if not name.startswith("b_")]
    changes = ", ".join(f'"{name}" = ?' for name in columns) or "id = id"
    fence = " AND owner = ? AND lease_epoch = ?" if fenced else ""
    kinds = [db.executions.c[name].type for name in columns] + [db.executions.c.id.type]
    encoder = RowEncoder([*columns, "b_id"], kinds, _DIALECT)
    return f"UPDATE executions SET {changes} WHERE id = ?{fence}", encoder


@functools.cache
def _upsert_nodes(names: tuple[str, ...]) -> tuple[str, RowEncoder]:
    """The node upsert: a node's row replaces the stored one's columns."""
    changes = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in _NODE_KEYS)
    action = f"DO UPDATE SET {changes}" if changes else "DO NOTHING"
    sql = (
        f"INSERT INTO nodes ({_quoted(names)}) VALUES ({_marks(names)}) "
        f"ON CONFLICT ({_quoted(_NODE_KEYS)}) {action}"
    )
    return sql, _encoder(db.nodes, names)


@functools.cache
def _insert_events(names: tuple[str, ...]) -> tuple[str, RowEncoder]:
    sql = f"INSERT INTO events ({_quoted(names)}) VALUES ({_marks(names)})"
    return sql, _encoder(db.events, names)


_CONSUME = "UPDATE signals SET consumed_by = ? WHERE execution_id = ? AND seq = ?"
