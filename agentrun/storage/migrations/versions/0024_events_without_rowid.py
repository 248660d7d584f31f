"""SQLite: `events` is a WITHOUT ROWID table (issue 18, the chain row).

A rowid table with a primary key of (execution_id, sequence) is two b-trees: the rows by rowid
and the key's own index. Every step's events (three a chain step) wrote pages of both to the
WAL. A WITHOUT ROWID table is the key's b-tree alone, its rows in it: about one page fewer a
step.

The rowids were what SQLite's notification poller sought new events by; it now reads the
`last_sequence` of the executions someone in its process watches, as it reads the instances'
(notifications.py), and event retention no longer keeps the newest row for the poller's mark
(sqldb_sqlite.py `maintain_events`): nothing reads an event's rowid any more.

The table is rebuilt from its own stored definition (whatever columns it has now) with
`WITHOUT ROWID` appended, every row copied, its indexes made again, as 0018 rebuilt `nodes`
and 0022 `sm_history`; it must run with foreign keys off (SqlDatabase migrates that way). The
downgrade rebuilds it with rowids (new ones, in key order: a poller of the older code reads
where the table ends when it starts). PostgreSQL has no rowids: nothing to do there.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_TABLE = "events"
_BUILT = "_events_0024"


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
            "migration 0024 rebuilds events: run it with PRAGMA foreign_keys=OFF, or dropping "
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
    bind.exec_driver_sql(
        f'INSERT INTO "{_BUILT}" ({columns}) SELECT {columns} FROM "{_TABLE}" '
        "ORDER BY execution_id, sequence"
    )
    bind.exec_driver_sql(f'DROP TABLE "{_TABLE}"')
    bind.exec_driver_sql(f'ALTER TABLE "{_BUILT}" RENAME TO "{_TABLE}"')
    for index in indexes:
        bind.exec_driver_sql(index)
