"""Rows as the sqlite3 module takes them: the values of each row encoded by its columns' own
bind processors (`RowEncoder`), and statements compiled once per set of parameter names
(`Plan`), so that the direct writers (sqlite_turns.py, sqlite_instances.py, the group commit
in sqldb_sqlite.py) write what SQLAlchemy would have bound, and reads through SQLAlchemy see
the same rows; and an INSERT of many rows as few multi-row statements (`ManyRows`)."""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import sqlalchemy as sa

from agentrun.storage import schema as db

__all__ = ["MAX_ROWS", "ManyRows", "Plan", "RowEncoder"]

# sqlite3 binds None as NULL, but only after its adapter protocol found no adapter for it: a
# registry lookup, then `__adapt__` on the protocol type, whose AttributeError (its message
# formatted) is thrown away, then `__conform__` on None; about 0.5 µs for each NULL parameter,
# ~23 in a chain step's rows (callgrind: ~5% of a step's instructions). An adapter for None is
# found by the first lookup, and hands None back: bound as NULL, as before. sqlite3 keeps one
# registry for the process; this changes no value any connection binds.
_NULL = cast(Callable[[None], None], {}.get)  # None for any key: a C call, no frame
sqlite3.register_adapter(type(None), _NULL)


class RowEncoder:
    """The values of rows as sqlite3 takes them, in the order of `names`: each encoded by
    its column type's bind processor (JSON text straight through `schema.json_text`, NULL
    left as it is), as SQLAlchemy would bind them, so reads through SQLAlchemy see the same
    rows."""

    def __init__(self, names: Sequence[str], kinds: Sequence[Any], dialect: sa.Dialect) -> None:
        self.names = tuple(names)
        self._get = operator.itemgetter(*names)
        self._single = len(names) == 1
        # JSON columns (most of a row's encoding, and mostly NULL) apart from the others.
        self._json: list[int] = []
        self._encode: list[tuple[int, Callable[[Any], Any]]] = []
        for index, kind in enumerate(kinds):
            impl = kind.dialect_impl(dialect)
            if isinstance(impl, db.JsonText):
                self._json.append(index)
                continue
            processor = impl.bind_processor(dialect)
            if processor is not None:
                self._encode.append((index, processor))

    def params(self, rows: Sequence[dict[str, Any]]) -> list[Sequence[Any]]:
        get, encode, json_columns = self._get, self._encode, self._json
        if self._single:
            return [(self._one(get(row)),) for row in rows]
        if not encode and not json_columns:
            return [get(row) for row in rows]
        dumps = db.json_text
        params: list[Sequence[Any]] = []
        for row in rows:
            values = list(get(row))
            for index in json_columns:
                value = values[index]
                if value is not None:
                    values[index] = dumps(value)
            for index, processor in encode:
                values[index] = processor(values[index])
            params.append(values)
        return params

    def _one(self, value: Any) -> Any:
        if self._json:
            return _json_text(value)
        return self._encode[0][1](value) if self._encode else value


class Plan(RowEncoder):
    """A statement compiled for one set of parameter names, with its `RowEncoder`."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect, keys: tuple[str, ...]):
        # Kept, so that the statement's id (the plan's key) is not reused.
        self.statement = statement
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        names = list(compiled.positiontup)
        super().__init__(names, [compiled.binds[name].type for name in names], dialect)


def _json_text(value: Any) -> str | None:
    """JsonText's encoding without the TypeDecorator's layers around it."""
    return None if value is None else db.json_text(value)


# Rows in one multi-row statement at most (`ManyRows`): a node's row binds 17 parameters, far
# below SQLite's limit (32,766) at 32 rows.
MAX_ROWS = 32
_EXACT = 16  # row counts up to this one get a statement of their own size


class ManyRows:
    """A one-row INSERT (`INSERT INTO t (...) VALUES (?, ...)`, an ON CONFLICT clause after it
    or not) for many rows: `VALUES (?, ...), (?, ...), ...`, each statement up to MAX_ROWS rows.
    sqlite3's `executemany` runs its statement once per row (a bind, a step, a reset each), and
    releases the GIL around each `sqlite3_step`, which the writer thread then takes back from
    the event loop's. A 1-node start wrote 8 statements (its execution, its node, its events); under
    `benchmarks/start.py`'s load at c=10 (groups of ~3 starts) the turn writer now runs ~1.1
    a start, and `write_turns` takes ~19% less CPU for a group of ten starts (7 Dec 2026; the
    writer thread's context switches, ~4 a start, did not change measurably). SQLite inserts a
    multi-row statement's rows in their order, each upsert seeing the rows before it, as the
    statements one by one do.

    A multi-row statement is `INSERT OR FAIL`: a row SQLite refuses ends it with an error and
    leaves the statement's rows before it. As a plain INSERT (ABORT: those rows undone), SQLite
    kept a statement journal (the pages' content before the statement) that spilled to a temp
    file past 64 KiB: in 8 of 100 group commits of ten starts, an open, unlink and pwrites to
    it, ~2 pwrites a group more (strace). Every caller rolls its transaction back on the error
    but `_insert_creates` (sqlite_turns.py), which counts the rows that went in
    (`total_changes`).

    Row counts past 16 are rounded down to a multiple of 8 (the rest another statement): at most
    18 texts per INSERT in the connection's statement cache (sqlite3 keeps 128; a 32-row
    node upsert takes ~0.1 ms to compile), one statement for up to 16 rows of a table, at most
    two for up to 32."""

    __slots__ = ("_head", "_row", "_sized", "_tail", "sql")

    def __init__(self, sql: str) -> None:
        head, values, rest = sql.partition(" VALUES (")
        marks, closed, tail = rest.partition(")")
        if not (sql.startswith("INSERT INTO ") and values and closed and set(marks) <= set("?, ")):
            raise ValueError(f"not a one-row INSERT of parameters: {sql}")
        self.sql = sql
        head = head.replace("INSERT INTO ", "INSERT OR FAIL INTO ", 1)
        self._head, self._row, self._tail = f"{head} VALUES ", f"({marks})", tail
        self._sized: dict[int, str] = {1: sql}

    def statement(self, rows: int) -> str:
        """The statement for `rows` rows (built once)."""
        sql = self._sized.get(rows)
        if sql is None:
            sql = self._sized[rows] = f"{self._head}{', '.join([self._row] * rows)}{self._tail}"
        return sql

    def chunks(self, params: Sequence[Sequence[Any]]) -> Iterator[tuple[str, Sequence[Any], int]]:
        """(statement, its parameters, its rows' count) for consecutive runs of `params`
        (each row's parameters): their rows in their order."""
        start, left = 0, len(params)
        while left:
            count = left if left <= _EXACT else min(left // 8 * 8, MAX_ROWS)
            if count == 1:
                yield self.sql, params[start], 1
            else:
                chunk = params[start : start + count]
                yield self.statement(count), list(itertools.chain.from_iterable(chunk)), count
            start, left = start + count, left - count

    def run(
        self, conn: sqlite3.Connection | sqlite3.Cursor, params: Iterable[Sequence[Any]]
    ) -> None:
        """Inserts rows of these parameters, in their order (as `executemany` would); a row
        SQLite refuses raises, the rows before it in the statement left in (OR FAIL)."""
        rows = params if isinstance(params, list) else list(params)
        execute = conn.execute
        for sql, values, _count in self.chunks(rows):
            execute(sql, values)
