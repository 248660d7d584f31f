"""The SQL text and parameter makers of the SQLite turn writer (sqlite_turns.py), built once per
column shape of the rows it writes: the execution UPDATEs (`update_plan`, with the indexed
columns kept out of the first), the node upsert, the event and execution INSERTs, the signal
statements, and `maker`, which turns a record into its row's parameters with one generated
tuple expression. Apart from sqlite_turns.py, whose writers run them on the hot path, so that
each module keeps one concern: what is written (here) and when and in which transaction
(there)."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from agentrun.storage import schema as db
from agentrun.storage.sqlite_rows import RowEncoder

__all__ = [
    "CONSUME",
    "DIALECT",
    "INDEXED",
    "INSERT_SIGNAL",
    "NODE_KEYS",
    "SIGNAL_COLUMNS",
    "SIGNAL_ENCODER",
    "Slim",
    "UpdatePlan",
    "encoder",
    "fields",
    "insert_events",
    "insert_execution",
    "maker",
    "marks",
    "quoted",
    "update_plan",
    "upsert_nodes",
]

DIALECT = SQLiteDialect_pysqlite()
NODE_KEYS = tuple(c.name for c in db.nodes.primary_key.columns)


def encoder(table: sa.Table, names: Sequence[str]) -> RowEncoder:
    """Values of rows by these keys (`b_id`: the row's id) as their columns bind them."""
    kinds = [table.c[name.removeprefix("b_")].type for name in names]
    return RowEncoder(names, kinds, DIALECT)


def quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def marks(names: Sequence[str]) -> str:
    return ", ".join(["?"] * len(names))


# Columns of executions in some index besides the primary key. SQLite rewrites a row's entry
# in each index whose column an UPDATE assigns, whatever the value: `state` and `ended_at` cost
# two of a chain step's seven WAL pages while they stay the same (RUNNING, NULL).
INDEXED = frozenset(
    column.name
    for index in [*db.executions.indexes, *db.executions.constraints]
    if isinstance(index, (sa.Index, sa.UniqueConstraint))
    for column in index.columns
)


class UpdatePlan:
    """An execution's UPDATE statements for one set of row keys (`update_plan`)."""

    def __init__(
        self,
        kept_sql: str,
        kept: RowEncoder,
        moved_sql: str | None,
        full_sql: str | None = None,
        full: RowEncoder | None = None,
    ) -> None:
        self.kept_sql, self.kept, self.full_sql, self.full = kept_sql, kept, full_sql, full
        self.moved_sql = moved_sql


@functools.cache
def update_plan(
    names: tuple[str, ...],
    fenced: bool,
    nulls: tuple[str, ...] = (),
    empties: tuple[str, ...] = (),
) -> UpdatePlan:
    """The execution UPDATE for a row of these keys (`b_id` names the row, the rest are the
    columns it changes); fenced: the owner and epoch follow as two more parameters. The indexed
    columns (`INDEXED`) are not assigned by the first (`kept_sql`; its parameters: the other
    values, `b_id`, then the indexed values): it holds only while they are stored as the row
    says (`IS`: NULL too). When it changes no row, the second (`full_sql`; the values, then
    `b_id`) assigns them all. A RETURNING of the stored values to compare them made SQLite
    build the returned rows: that UPDATE cost three times this one (14 µs a step of 20, a
    replay of a chain's statements on /dev/shm). `nulls`: columns whose values are None,
    written as NULL literals in the first (`_slim`), which takes no parameters for them;
    `empties`: JSON columns whose values are empty objects, written as '{}' literals so.
    `moved_sql` (when the keys hold `last_sequence`): a read of the row with the first's
    parameters, found when every column but `last_sequence` is stored as the row says (and
    the stored `last_sequence` is not past it): the turn then leaves the row as it is."""
    columns = [name for name in names if not name.startswith("b_") and name not in INDEXED]
    indexed = [name for name in names if name in INDEXED]

    def value(name: str) -> str:
        return "NULL" if name in nulls else "'{}'" if name in empties else "?"

    changes = ", ".join(f'"{name}" = {value(name)}' for name in columns) or "id = id"
    fence = " AND owner = ? AND lease_epoch = ?" if fenced else ""
    same = "".join(f' AND "{name}" IS {value(name)}' for name in indexed)
    kept_sql = f"UPDATE executions SET {changes} WHERE id = ?{same}{fence}"
    moved_sql = None
    if "last_sequence" in columns:
        stored = " AND ".join(
            f'"{name}" <= ?' if name == "last_sequence" else f'"{name}" IS {value(name)}'
            for name in columns
        )
        moved_sql = f"SELECT 1 FROM executions WHERE {stored} AND id = ?{same}{fence}"
    literal = {*nulls, *empties}
    bound = [name for name in [*columns, "b_id", *indexed] if name not in literal]
    kept = encoder(db.executions, bound)
    if not indexed:
        return UpdatePlan(kept_sql, kept, moved_sql)
    assigned = ", ".join(f'"{name}" = ?' for name in [*columns, *indexed])
    full_sql = f"UPDATE executions SET {assigned} WHERE id = ?{fence}"
    return UpdatePlan(
        kept_sql, kept, moved_sql, full_sql, encoder(db.executions, [*columns, *indexed, "b_id"])
    )


@functools.cache
def insert_execution(names: tuple[str, ...], once: bool) -> tuple[str, RowEncoder]:
    """A new execution's INSERT; `once` (it has a request id): a (tenant, request_id) already
    used inserts nothing (its row count tells), as the transaction's way does."""
    sql = f"INSERT INTO executions ({quoted(names)}) VALUES ({marks(names)})"
    if once:
        sql += ' ON CONFLICT ("tenant", "request_id") DO NOTHING'
    return sql, encoder(db.executions, names)


@functools.cache
def upsert_nodes(names: tuple[str, ...], nulls: tuple[str, ...] = ()) -> tuple[str, RowEncoder]:
    """The node upsert: a node's row replaces the stored one's columns. `nulls`: columns of
    `names` whose values are None (`_slim`): left out of the INSERT (their default is NULL)
    and set to NULL by its update."""
    changes = ", ".join(
        f'"{n}" = ' + ("NULL" if n in nulls else f'excluded."{n}"')
        for n in names
        if n not in NODE_KEYS
    )
    action = f"DO UPDATE SET {changes}" if changes else "DO NOTHING"
    names = tuple(n for n in names if n not in nulls)
    sql = (
        f"INSERT INTO nodes ({quoted(names)}) VALUES ({marks(names)}) "
        f"ON CONFLICT ({quoted(NODE_KEYS)}) {action}"
    )
    return sql, encoder(db.nodes, names)


@functools.cache
def insert_events(names: tuple[str, ...]) -> tuple[str, RowEncoder]:
    sql = f"INSERT INTO events ({quoted(names)}) VALUES ({marks(names)})"
    return sql, encoder(db.events, names)


CONSUME = "UPDATE signals SET consumed_by = ? WHERE execution_id = ? AND seq = ?"
# A signal stored by its turn (`Batch.signals`), the next seq of its execution, as
# executions.py's `INSERT_SIGNAL`; a used signal id refuses the group (IntegrityError).
SIGNAL_COLUMNS = ("execution_id", "name", "data", "signal_id", "created_at", "consumed_by")
SIGNAL_ENCODER = RowEncoder(
    [f"b_{name}" for name in SIGNAL_COLUMNS],
    [db.signals.c[name].type for name in SIGNAL_COLUMNS],
    DIALECT,
)
INSERT_SIGNAL = (
    f"INSERT INTO signals ({quoted(SIGNAL_COLUMNS)}, seq) VALUES ({marks(SIGNAL_COLUMNS)},"
    " (SELECT coalesce(max(seq), 0) + 1 FROM signals WHERE execution_id = ?1))"
)


def maker(table: sa.Table, names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A record's values for these columns (its fields of the same names; `id` for `b_id`) as
    sqlite3 takes them, each encoded as `RowEncoder` encodes a row's (JSON text through
    `schema.json_text`, the column type's bind processor, an enum as its name, as
    `schema._mapper`'s rows hold it): one generated tuple expression, without the row dict the
    group commit's way builds first and the per-row loop that reads it."""
    namespace: dict[str, Any] = {"dumps": db.json_text, "str": str, "empty": {}}
    parts = []
    for index, key in enumerate(names):
        name = key.removeprefix("b_")
        impl = table.c[name].type.dialect_impl(DIALECT)
        processor = impl.bind_processor(DIALECT)
        if isinstance(impl, db.JsonText):
            # An empty object (an execution's vars and labels, nearly always) is "{}", as
            # json_text writes it, without a call to the encoder.
            parts.append(f'None if (v := r.{name}) is None else "{{}}" if v == empty else dumps(v)')
        elif name == "state":  # ExecutionState, NodeState
            parts.append(f"str(r.{name})")
        elif processor is not None:
            namespace[f"p{index}"] = processor
            parts.append(f"p{index}(r.{name})")
        else:
            parts.append(f"r.{name}")
    exec(f"def params(r):\n    return ({', '.join(parts)},)\n", namespace)  # noqa: S102
    made: Callable[[Any], tuple[Any, ...]] = namespace["params"]
    return made


def fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


class Slim:
    """A record path statement for records whose `names` fields are all None (`none`): it
    names those columns as NULL literals and takes no parameters for them (`params`). sqlite3
    sends every None parameter through its adapter registry (~1k instructions each, with the
    adapter for None of sqldb_sqlite.py); a chain step's rows held 23 such, 19 of them in the
    columns below (a running execution's, a running or succeeded node's)."""

    def __init__(
        self, names: tuple[str, ...], sql: str, table: sa.Table, bound: Sequence[str]
    ) -> None:
        self.names, self.sql = names, sql
        values = operator.attrgetter(*names)
        nones = (None,) * len(names)
        self.none: Callable[[Any], bool] = lambda record: values(record) == nones
        self.params = maker(table, bound)
