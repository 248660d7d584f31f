"""Rows as the sqlite3 module takes them: the values of each row encoded by its columns' own
bind processors (`RowEncoder`), and statements compiled once per set of parameter names
(`Plan`), so that the direct writers (sqlite_turns.py, sqlite_instances.py, the group commit
in sqldb_sqlite.py) write what SQLAlchemy would have bound, and reads through SQLAlchemy see
the same rows."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa

from agentrun.storage import schema as db

__all__ = ["Plan", "RowEncoder"]

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
