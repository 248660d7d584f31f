"""SQLite: payload columns hold JSON text in TEXT columns, so bare numbers stay as written.

A column declared `JSON` has NUMERIC affinity in SQLite: a payload that was a bare number
(json.dumps text such as `2.0662443630870376e-307` or `9223372036854775813`) was converted
by SQLite's own parser as it was stored, and came back changed (...372e-307, a float). TEXT
affinity keeps the text. Each table is rebuilt (batch mode); the values stored as numbers
so far are read before the rebuild and written back as the exact JSON text of what they
read as, so every stored payload reads the same after this migration as before it (SQLite's
own number-to-text conversion keeps only 15 digits). PostgreSQL (JSONB) is unchanged.

The rebuild drops and renames tables that others reference with ON DELETE CASCADE: it must
run with foreign keys off (SqlDatabase migrates that way), or dropping `executions` would
delete every node, event and signal; it refuses to run otherwise.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration must not change when schema.py changes later.
# table: (primary key columns, payload columns)
_PAYLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "workflows": (("tenant", "name", "version"), ("spec",)),
    "executions": (("id",), ("input", "output", "error", "vars", "labels", "usage")),
    "nodes": (("execution_id", "node_id"), ("input", "output", "error", "usage")),
    "events": (("execution_id", "sequence"), ("data",)),
    "signals": (("execution_id", "seq"), ("data",)),
    "sm_instances": (("id",), ("data", "input", "error", "labels")),
    "sm_history": (("instance_id", "sequence"), ("event_data", "actions", "assigned", "error")),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _require_foreign_keys_off(bind)
    for table, (keys, columns) in _PAYLOADS.items():
        numbers = _stored_numbers(bind, table, keys, columns)
        with op.batch_alter_table(table, recreate="always") as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.Text())
        for column, rows in numbers.items():
            if rows:
                where = " AND ".join(f'"{k}" = :k{i}' for i, k in enumerate(keys))
                bind.execute(
                    sa.text(f'UPDATE "{table}" SET "{column}" = :value WHERE {where}'), rows
                )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _require_foreign_keys_off(bind)
    for table, (_keys, columns) in reversed(_PAYLOADS.items()):
        with op.batch_alter_table(table, recreate="always") as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.JSON())


def _require_foreign_keys_off(bind: sa.Connection) -> None:
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0007 rebuilds tables: run it with PRAGMA foreign_keys=OFF, or dropping "
            "a parent table would cascade to its children"
        )


def _stored_numbers(
    bind: sa.Connection, table: str, keys: tuple[str, ...], columns: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Per column, the rows whose payload SQLite stored as a number, with the JSON text of
    the number as it reads today (Python's repr: the shortest text that reads back exactly)."""
    found: dict[str, list[dict[str, Any]]] = {}
    key_list = ", ".join(f'"{k}"' for k in keys)
    for column in columns:
        rows = bind.exec_driver_sql(
            f'SELECT {key_list}, "{column}" FROM "{table}" '
            f"WHERE typeof(\"{column}\") IN ('integer', 'real')"
        ).all()
        found[column] = [
            {**{f"k{i}": row[i] for i in range(len(keys))}, "value": json.dumps(row[len(keys)])}
            for row in rows
        ]
    return found
