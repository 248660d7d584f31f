"""An instance's event ids are kept unique by a partial index (issue 18, the state machine row).

`sm_history`'s UNIQUE (instance_id, event_id) indexed every entry, those without an event id
(NULL, which never collides) too: on SQLite a b-tree page more to the WAL for every event
written, most of them sent without an id. The index now holds only the entries that have one
(`WHERE event_id IS NOT NULL`): the same ids are refused, as before.

SQLite keeps a UNIQUE constraint of CREATE TABLE in an index that cannot be dropped: the table
is rebuilt from its own stored definition without that constraint, every row copied with its
rowid (the notification poller seeks the history by rowid), its other indexes made again. The
rebuild must run with foreign keys off (SqlDatabase migrates that way), as 0018's does.
PostgreSQL drops the constraint and creates the partial index.

Revision ID: 0020
Revises: 0018
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

_TABLE = "sm_history"
_BUILT = "_sm_history_0020"
_NAME = "uq_sm_history_instance_id_event_id"
_WHERE = "event_id IS NOT NULL"
_CONSTRAINT = re.compile(
    rf',\s*CONSTRAINT\s+"?{_NAME}"?\s+UNIQUE\s*\(\s*"?instance_id"?\s*,\s*"?event_id"?\s*\)'
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_without_constraint(bind)
    else:
        op.drop_constraint(_NAME, _TABLE, type_="unique")
    op.create_index(
        _NAME,
        _TABLE,
        ["instance_id", "event_id"],
        unique=True,
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name=_TABLE)
    if op.get_bind().dialect.name == "sqlite":
        # The same uniqueness as the constraint 0005 declared, without a rebuild.
        op.create_index(_NAME, _TABLE, ["instance_id", "event_id"], unique=True)
    else:
        op.create_unique_constraint(_NAME, _TABLE, ["instance_id", "event_id"])


def _rebuild_without_constraint(bind: sa.Connection) -> None:
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0020 rebuilds sm_history: run it with PRAGMA foreign_keys=OFF"
        )
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (_TABLE,)
    ).scalar_one()
    body, found = _CONSTRAINT.subn("", create[create.index("(") : create.rindex(")") + 1])
    if found != 1:
        # Not the table 0005 made (or a database already without the constraint): the
        # unique index it has, if any, is dropped and the partial one made in its place.
        bind.exec_driver_sql(f'DROP INDEX IF EXISTS "{_NAME}"')
        return
    indexes = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (_TABLE,),
        )
    ]
    columns = ", ".join(
        f'"{row[1]}"' for row in bind.exec_driver_sql(f'PRAGMA table_info("{_TABLE}")')
    )
    bind.exec_driver_sql(f'CREATE TABLE "{_BUILT}" {body}')
    bind.exec_driver_sql(
        f'INSERT INTO "{_BUILT}" (rowid, {columns}) SELECT rowid, {columns} FROM "{_TABLE}"'
    )
    bind.exec_driver_sql(f'DROP TABLE "{_TABLE}"')
    bind.exec_driver_sql(f'ALTER TABLE "{_BUILT}" RENAME TO "{_TABLE}"')
    for index in indexes:
        bind.exec_driver_sql(index)
