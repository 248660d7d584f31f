"""SQLite: `events`, `nodes` and `sm_history` are rowid tables again (undoing 0024, 0018, 0022).

A WITHOUT ROWID table is an index b-tree: a cell keeps at most ~1,000 bytes of a row on a
4 KiB page and the rest goes to overflow pages of their own, where a rowid table's leaf keeps
~4,000 bytes in place. 0018, 0022 and 0024 saved one WAL page a step on benchmarks whose rows
were tiny; real rows carry node outputs and inputs, event data (LLM answers, HTTP bodies),
often over 1 KB. Measured in one run (benchmarks/rowid_layouts.py, /dev/shm, 800 steps; rowid
-> WITHOUT ROWID):

- events, a chain step's row and 3 events, one with the output: 100 B -16% WAL frames a step,
  but 1 KB +32% (1 execution at a time) / +61% (10 at once), 5 KB +26% / +33%; pages per
  1,000 events at 1 KB 145 -> 418 (+188%);
- sm_history, one entry an event: 100 B -16%, 1 KB +44% / +58%, 5 KB +8% / +24%; pages at
  1 KB 426 -> 1,230 (+189%);
- nodes, a step's two node writes: 100 B -15%, 1 KB +5% / -18%, 5 KB +4% / -7%; pages at
  1 KB +12%, 5 KB +24%.

Only for tiny rows does WITHOUT ROWID win; a table stays WITHOUT ROWID only if it is no worse
for payloads of 1 KB and more, which none of the three is. (`sm_inputs`, 0021, written once an
instance, is left as it is.) Nothing reads these rowids: SQLite's poller reads the watched
keys' `last_sequence` (notifications.py), so the new rowids (in key order) mean nothing.

Each table is rebuilt from its own stored definition (whatever columns it has now) without
`WITHOUT ROWID` (or with it, downgrading), every row copied in key order, its indexes made
again, as 0018, 0022 and 0024 did; it must run with foreign keys off (SqlDatabase migrates
that way). PostgreSQL has no rowids: nothing to do there.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_TABLES = ("events", "nodes", "sm_history")


def upgrade() -> None:
    for table in _TABLES:
        _rebuild(table, without_rowid=False)


def downgrade() -> None:
    for table in _TABLES:
        _rebuild(table, without_rowid=True)


def _rebuild(table: str, *, without_rowid: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            f"migration 0025 rebuilds {table}: run it with PRAGMA foreign_keys=OFF, or "
            "dropping it could fail on its references"
        )
    built = f"_{table}_0025"
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    indexes = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    ]
    body = create[create.index("(") : create.rindex(")") + 1]
    info = list(bind.exec_driver_sql(f'PRAGMA table_info("{table}")'))
    columns = ", ".join(f'"{row[1]}"' for row in info)
    key = ", ".join(f'"{row[1]}"' for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
    suffix = " WITHOUT ROWID" if without_rowid else ""
    bind.exec_driver_sql(f'CREATE TABLE "{built}" {body}{suffix}')
    bind.exec_driver_sql(
        f'INSERT INTO "{built}" ({columns}) SELECT {columns} FROM "{table}" ORDER BY {key}'
    )
    bind.exec_driver_sql(f'DROP TABLE "{table}"')
    bind.exec_driver_sql(f'ALTER TABLE "{built}" RENAME TO "{table}"')
    for index in indexes:
        bind.exec_driver_sql(index)
