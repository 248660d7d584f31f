"""What rebuilding runs reads of a SQL database: an execution with its node rows and
unconsumed signals (`restore_read`, one query) and the rows of many executions (`restore_reads`,
two queries per chunk of ids). `SqlExecutions` (executions.py) takes these methods of the
`ExecutionRepository` interface from `ExecutionRestores`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import ExecutionRecord, NodeRecord, SignalRecord
from agentrun.storage.sqldb import SqlDatabase

__all__ = ["ExecutionRestores"]


class ExecutionRestores:
    """The restore reads of the repository's `database`."""

    database: SqlDatabase

    async def restore_reads(
        self, execution_ids: Sequence[str]
    ) -> dict[str, tuple[list[NodeRecord], list[SignalRecord]]]:
        """`Store.restore_reads`: the node rows and unconsumed signals of many executions in
        two queries per chunk of ids (recovery rebuilds hundreds of runs at once)."""
        out: dict[str, tuple[list[NodeRecord], list[SignalRecord]]] = {
            i: ([], []) for i in execution_ids
        }
        ids = list(out)
        for start in range(0, len(ids), _RESTORE_CHUNK):
            chunk = ids[start : start + _RESTORE_CHUNK]
            nodes = (
                sa.select(db.nodes)
                .where(db.nodes.c.execution_id.in_(chunk))
                .order_by(db.nodes.c.execution_id, db.nodes.c.node_id)
            )
            for row in await self.database.read(nodes):
                out[row.execution_id][0].append(db.node_record(row))
            signals = (
                sa.select(db.signals)
                .where(db.signals.c.execution_id.in_(chunk), db.signals.c.consumed_by.is_(None))
                .order_by(db.signals.c.execution_id, db.signals.c.seq)
            )
            for row in await self.database.read(signals):
                out[row.execution_id][1].append(db.signal_record(row))
        return out

    async def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        """`Store.restore_read` in one query (`_RESTORE_ONE`), one snapshot: one round trip on
        PostgreSQL; on SQLite one read on the loop's thread (`read_now`), where three reads
        side by side through aiosqlite cost fifteen thread hand-offs."""
        folded = self.database.dialect == "sqlite"
        statement = _RESTORE_FOLDED if folded else _RESTORE_ONE
        rows = await self.database.read_now(statement, {"b_id": execution_id})
        if not rows or rows[0].kind != 0:
            return None
        record = db.execution_record(_Unprefixed(rows[0], "e_"))
        nodes = [db.node_record(_Unprefixed(r, "n_")) for r in rows if r.kind == 1]
        signals = [db.signal_record(_Unprefixed(r, "s_")) for r in rows if r.kind == 2]
        return record, nodes, signals


# Ids per query of `restore_reads` (well under SQLite's 32,766 bound parameters).
_RESTORE_CHUNK = 500


def _restore_one(folded: bool = False) -> sa.CompoundSelect[Any]:
    """An execution's row, its node rows and its unconsumed signals as one UNION ALL: each
    row says which it is (`kind` 0, 1, 2) and carries the columns of every table, prefixed
    (`e_`, `n_`, `s_`), NULL (typed, so both dialects decode them alike) where not its own.
    Ordered as `get_nodes` and `pending_signals` order theirs. `folded` (SQLite): the
    execution's last sequence as SQLite's readers take it (`schema.FOLDED_LAST_SEQUENCE`)."""
    tables = ((db.executions, "e_"), (db.nodes, "n_"), (db.signals, "s_"))
    wanted = sa.bindparam("b_id", type_=sa.String())
    where = (
        db.executions.c.id == wanted,
        db.nodes.c.execution_id == wanted,
        sa.and_(db.signals.c.execution_id == wanted, db.signals.c.consumed_by.is_(None)),
    )
    branches = []
    for kind, (table, _prefix) in enumerate(tables):
        columns: list[sa.ColumnElement[Any]] = [
            sa.literal_column(str(kind), sa.Integer).label("kind")
        ]
        for other, prefix in tables:
            for column in other.c:
                value: sa.ColumnElement[Any] = (
                    column if other is table else sa.cast(sa.null(), column.type)
                )
                if folded and column is db.executions.c.last_sequence and other is table:
                    value = db.FOLDED_LAST_SEQUENCE
                columns.append(value.label(prefix + column.name))
        branches.append(sa.select(*columns).where(where[kind]))
    return sa.union_all(*branches).order_by(
        sa.literal_column("kind"), sa.literal_column("n_node_id"), sa.literal_column("s_seq")
    )


_RESTORE_ONE = _restore_one()
_RESTORE_FOLDED = _restore_one(folded=True)


def _positions(prefix: str) -> tuple[tuple[str, ...], operator.itemgetter[Any]]:
    """The column names of one table in `_RESTORE_ONE`'s rows, and where they are."""
    labels = list(_RESTORE_ONE.selected_columns.keys())
    names = tuple(label[len(prefix) :] for label in labels if label.startswith(prefix))
    return names, operator.itemgetter(*(labels.index(prefix + name) for name in names))


_COLUMNS = {prefix: _positions(prefix) for prefix in ("e_", "n_", "s_")}


class _Unprefixed:
    """A row of `_RESTORE_ONE` as one table's row (what the record mappers read)."""

    __slots__ = ("_mapping",)

    def __init__(self, row: sa.Row[Any], prefix: str) -> None:
        names, values = _COLUMNS[prefix]
        self._mapping = dict(zip(names, values(row), strict=True))
