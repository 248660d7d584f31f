"""SQLite: `nodes` is a WITHOUT ROWID table (issue 18, the durable step at the floor).

A rowid table with a primary key of (execution_id, node_id) is two b-trees: the rows by rowid
and the key's own index. Every node upsert (two a chain step: the node that ended, the one
that starts) wrote a page of each to the WAL. A WITHOUT ROWID table is the key's b-tree
alone, its rows in it: one page fewer a step. Nothing reads a node's rowid (the notification
poller seeks events, signals and instance history by rowid, never nodes).

The table is rebuilt from its own stored definition (whatever columns it has now) with
`WITHOUT ROWID` appended, every row copied, its indexes made again; `events`, whose rowid
the poller needs, stays as it is. The rebuild drops a table whose parent is referenced with
ON DELETE CASCADE only from it, but it must still run with foreign keys off (SqlDatabase
migrates that way), as 0007 does. PostgreSQL has no rowids: nothing to do there.

Revision ID: 0018
Revises: 0019 (0019 landed first, on 0017)
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0019"
branch_labels = None
depends_on = None

_TABLE = "nodes"
_BUILT = "_nodes_0018"


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)


def _rebuild(*, without_rowid: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0018 rebuilds nodes: run it with PRAGMA foreign_keys=OFF, or dropping "
            "it could fail on its references"
        )
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (_TABLE,)
    ).scalar_one()
    indexes = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (_TABLE,),
        )
    ]
    body = create[create.index("(") : create.rindex(")") + 1]
    columns = ", ".join(
        f'"{row[1]}"' for row in bind.exec_driver_sql(f'PRAGMA table_info("{_TABLE}")')
    )
    suffix = " WITHOUT ROWID" if without_rowid else ""
    bind.exec_driver_sql(f'CREATE TABLE "{_BUILT}" {body}{suffix}')
    bind.exec_driver_sql(f'INSERT INTO "{_BUILT}" ({columns}) SELECT {columns} FROM "{_TABLE}"')
    bind.exec_driver_sql(f'DROP TABLE "{_TABLE}"')
    bind.exec_driver_sql(f'ALTER TABLE "{_BUILT}" RENAME TO "{_TABLE}"')
    for index in indexes:
        bind.exec_driver_sql(index)
