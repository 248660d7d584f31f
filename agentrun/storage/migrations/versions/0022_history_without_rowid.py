"""SQLite: `sm_history` is a WITHOUT ROWID table (issue 18, the state machine row).

A rowid table with a primary key of (instance_id, sequence) is two b-trees: the rows by rowid
and the key's own index. Every event's entry wrote a page of each to the WAL, beside its
instance's row: 3.3 pages an event, where the floor (one INSERT + COMMIT) writes one. A WITHOUT
ROWID table is the key's b-tree alone, its rows in it: 2.4 pages an event, and about 4 µs less
CPU (raw sqlite3, /dev/shm).

The rowids were what SQLite's notification poller sought new history by; it now reads the
`last_sequence` of the instances someone in its process watches (notifications.py), so nothing
reads a history rowid any more.

The table is rebuilt from its own stored definition (whatever columns it has now) with
`WITHOUT ROWID` appended, every row copied, its indexes (the partial unique index of event ids)
made again, as 0018 rebuilt `nodes`; it must run with foreign keys off (SqlDatabase migrates
that way). The downgrade rebuilds it with rowids (new ones, in key order). PostgreSQL has no
rowids: nothing to do there.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_TABLE = "sm_history"
_BUILT = "_sm_history_0022"


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
            "migration 0022 rebuilds sm_history: run it with PRAGMA foreign_keys=OFF, or "
            "dropping it could fail on its references"
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
