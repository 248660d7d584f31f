"""Engine turns on SQLite straight through sqlite3: the group commit's `direct` writer.

Through the transaction's way (`SqlExecutions._apply`) a group of turns went through
SQLAlchemy's connection and transaction objects, a statement lookup and a cursor per
statement, and the merge of every batch's rows, on the loop's thread for each small group:
more CPU than the statements themselves. Here the group is one transaction on the write
connection's sqlite3 handle (`SqliteDatabase.turn_transaction`: on the loop's thread or in
the writer thread, as any group commit), with plain SQL built once per column shape (sqlite3's
statement cache keeps each compiled):
- each batch's execution UPDATE, the fence folded in (`... AND owner = ? AND lease_epoch = ?`),
  the stored values of its indexed columns (state, ended_at) returned: a batch whose row did
  not change (a stale fence, an unknown execution) writes nothing else; those columns are a
  second UPDATE, run only when they differ (`_INDEXED`: an index entry is rewritten for every
  column assigned, so a step that keeps them wrote two index pages more to the WAL);
- the node upserts, event INSERTs and consumed signals of the batches whose UPDATE held, each
  one `executemany` for the group.

A new execution with its first turn (a start: `create_execution`) is its row's INSERT in place
of the UPDATE (`ON CONFLICT (tenant, request_id) DO NOTHING` when it has a request id, its row
count read: a used request id writes nothing of its batch), then the same rows.

The values are encoded by the columns' own bind processors (`RowEncoder`, as SQLAlchemy binds
them) and the statements name the same columns as the transaction's way: the rows written are
the same. Which batches it covers is PostgreSQL's rule (pg_turns.py `covered_batches`): a batch
whose row did not change (or a start whose request id is used), and what the rule leaves out
are answered UNWRITTEN, and the group commit writes them the transaction's way, which refuses a
stale batch with LeaseLost and an unknown execution with KeyError, and answers a repeated start
with the stored execution, as ever.
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

    def write_now(self, batch: TurnRows) -> bool:
        """Writes one execution's turn (not a start) now, without a coroutine, when the group
        commit would write it alone on the loop's thread anyway (`SqliteDatabase.write_now`;
        the caller checks its writer's queue). Whether it was written; False: nothing written
        (not now, stale, refused, unavailable), and the group commit takes it and gives its
        caller the usual outcome (LeaseLost, KeyError, ...)."""
        if batch.create is not None or not covered_batches((batch,))[0]:
            return False
        done = self._database.write_now(functools.partial(write_turns, (batch,)))
        if done is None or done[0] is None:
            return False
        assert batch.execution is not None
        return batch.execution["b_id"] in done[0][0]

    async def __call__(self, batches: Sequence[TurnRows]) -> list[Any] | None:
        """Writes the covered batches in one transaction; each batch's result (None: written,
        UNWRITTEN: not written), or None when SQLite refused a statement (nothing written).
        StoreError when the database is unavailable."""
        covered = covered_batches(batches)
        mine = [batch for batch, yes in zip(batches, covered, strict=True) if yes]
        if not mine:
            return [UNWRITTEN] * len(batches)
        try:
            written = await self._database.turn_transaction(
                functools.partial(write_turns, mine), items=len(mine)
            )
        except sqlite3.Error:
            return None  # rolled back: the transaction's way finds whose batch it was
        if written is None:
            return None
        done, made = written
        return [turn_result(b, yes, done, made) for b, yes in zip(batches, covered, strict=True)]


def write_turns(
    batches: Sequence[TurnRows], conn: sqlite3.Connection
) -> tuple[set[str], set[str]] | None:
    """Writes `batches` (each a new execution's INSERT or an UPDATE of its own execution, with
    rows of that execution only) inside the caller's transaction; the ids of the executions
    updated and of those created, or None when the rows differ in shape (checked first:
    nothing written then, the transaction's way takes them)."""
    if not (_same_shape(b.nodes for b in batches) and _same_shape(b.events for b in batches)):
        return None
    done: set[str] = set()
    made: set[str] = set()
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    consumed: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    for batch in batches:
        create, row = batch.create, batch.create_row
        if create is not None and row is not None:
            sql, encoder = _insert_execution(tuple(row), create.request_id is not None)
            if conn.execute(sql, encoder.params((row,))[0]).rowcount != 1:
                continue  # its request id is used: the transaction's way reads the stored one
            made.add(create.id)
        else:
            row = batch.execution
            assert row is not None
            fence = batch.fence
            sql, encoder, indexed = _update(tuple(row), fence is not None)
            params = encoder.params((row,))[0]
            if fence is not None:
                params = (*params, *fence)
            if indexed is None:
                if conn.execute(sql, params).rowcount != 1:
                    continue  # stale or unknown: nothing of this batch
            else:
                stored = conn.execute(sql, params).fetchall()
                if not stored:
                    continue  # stale or unknown: nothing of this batch
                sql, encoder = indexed
                params = encoder.params((row,))[0]
                if tuple(stored[0]) != tuple(params[:-1]):
                    conn.execute(sql, params)
            done.add(row["b_id"])
        for node in batch.nodes:
            nodes[(node["execution_id"], node["node_id"])] = node
        events += batch.events
        consumed += batch.consumed
        signals += batch.signals
    if nodes:
        _many(conn, _upsert_nodes, list(nodes.values()))
    if events:
        _many(conn, _insert_events, events)
    if consumed:
        conn.executemany(_CONSUME, [(c["b_node"], c["b_execution"], c["b_seq"]) for c in consumed])
    if signals:  # each takes the seq after the one before: one by one (executemany is)
        conn.executemany(_INSERT_SIGNAL, _SIGNAL_ENCODER.params(signals))
    return done, made


def _same_shape(groups: Any) -> bool:
    """Whether the rows of all `groups` have the same keys (one statement takes them all:
    its encoder picks each row's values by name, so their order does not matter)."""
    names: Any = None
    for rows in groups:
        for row in rows:
            if names is None:
                names = row.keys()
            elif row.keys() != names:
                return False
    return True


def _many(
    conn: sqlite3.Connection,
    statement: Callable[[tuple[str, ...]], tuple[str, RowEncoder]],
    rows: list[dict[str, Any]],
) -> None:
    """One executemany of `statement` for rows of one shape (`_same_shape`)."""
    sql, encoder = statement(tuple(rows[0]))
    conn.executemany(sql, encoder.params(rows))


def _encoder(table: sa.Table, names: Sequence[str]) -> RowEncoder:
    return RowEncoder(names, [table.c[name].type for name in names], _DIALECT)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _marks(names: Sequence[str]) -> str:
    return ", ".join(["?"] * len(names))


# Columns of executions in some index besides the primary key. SQLite rewrites a row's entry
# in each index whose column an UPDATE assigns, whatever the value: `state` and `ended_at` cost
# two of a chain step's seven WAL pages while they stay the same (RUNNING, NULL).
_INDEXED = frozenset(
    column.name
    for index in [*db.executions.indexes, *db.executions.constraints]
    if isinstance(index, (sa.Index, sa.UniqueConstraint))
    for column in index.columns
)


@functools.cache
def _update(
    names: tuple[str, ...], fenced: bool
) -> tuple[str, RowEncoder, tuple[str, RowEncoder] | None]:
    """The execution UPDATE for a row of these keys (`b_id` names the row, the rest are the
    columns it changes); fenced: the owner and epoch follow as two more parameters. The indexed
    columns (`_INDEXED`) are left to a second UPDATE (its parameters: the values, then `b_id`),
    run only when they differ from the stored ones, which the first returns (`RETURNING`:
    as it does not assign them, their stored values; a second statement that found the row
    to compare them cost a step a tenth of its SQLite time)."""
    columns = [name for name in names if not name.startswith("b_") and name not in _INDEXED]
    indexed = [name for name in names if name in _INDEXED]
    changes = ", ".join(f'"{name}" = ?' for name in columns) or "id = id"
    fence = " AND owner = ? AND lease_epoch = ?" if fenced else ""
    kinds = [db.executions.c[name].type for name in columns] + [db.executions.c.id.type]
    encoder = RowEncoder([*columns, "b_id"], kinds, _DIALECT)
    sql = f"UPDATE executions SET {changes} WHERE id = ?{fence}"
    if not indexed:
        return sql, encoder, None
    sql += f" RETURNING {_quoted(indexed)}"
    assigned = ", ".join(f'"{name}" = ?' for name in indexed)
    second = f"UPDATE executions SET {assigned} WHERE id = ?"
    kinds = [db.executions.c[name].type for name in indexed] + [db.executions.c.id.type]
    return sql, encoder, (second, RowEncoder([*indexed, "b_id"], kinds, _DIALECT))


@functools.cache
def _insert_execution(names: tuple[str, ...], once: bool) -> tuple[str, RowEncoder]:
    """A new execution's INSERT; `once` (it has a request id): a (tenant, request_id) already
    used inserts nothing (its row count tells), as the transaction's way does."""
    sql = f"INSERT INTO executions ({_quoted(names)}) VALUES ({_marks(names)})"
    if once:
        sql += ' ON CONFLICT ("tenant", "request_id") DO NOTHING'
    return sql, _encoder(db.executions, names)


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
# A signal stored by its turn (`Batch.signals`), the next seq of its execution, as
# executions.py's `_INSERT_SIGNAL`; a used signal id refuses the group (IntegrityError).
_SIGNAL_COLUMNS = ("execution_id", "name", "data", "signal_id", "created_at", "consumed_by")
_SIGNAL_ENCODER = RowEncoder(
    [f"b_{name}" for name in _SIGNAL_COLUMNS],
    [db.signals.c[name].type for name in _SIGNAL_COLUMNS],
    _DIALECT,
)
_INSERT_SIGNAL = (
    f"INSERT INTO signals ({_quoted(_SIGNAL_COLUMNS)}, seq) VALUES ({_marks(_SIGNAL_COLUMNS)},"
    " (SELECT coalesce(max(seq), 0) + 1 FROM signals WHERE execution_id = ?1))"
)
