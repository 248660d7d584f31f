"""`sm_history.entry_sequence`: an event that only moves its instance writes one b-tree page on
SQLite, its history entry (issue 18, the state machine row).

An event wrote two pages beside the floor's one: its history entry and its instance's row,
rewritten for `current`, `updated_at`, `last_sequence` and `entry_sequence` even when nothing
else (state, data, pending, invoke, labels, error) changed. Three of the four are in the entry
already (to_state, time, sequence); this column holds the fourth. SQLite's writer
(sqlite_instances.py) now leaves the row as it is when only those moved and puts the
instance's `entry_sequence` in the batch's last entry; readers take the newest entry past the
row's `last_sequence` that has one as the row's newer values (machine_rows.py). Rows written
before have NULL: nothing to fold, the row holds them.

The downgrade first folds those entries into their rows (what the older code reads), then
drops the column (SQLite: ALTER TABLE DROP COLUMN, the column in no index).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# An instance's newest entry when it is past its row's last_sequence and carries the moved
# values, as the readers fold it (machine_rows.FOLDED; a correlated subquery per column:
# both dialects, run once).
_NEWEST = (
    "SELECT {column} FROM sm_history h WHERE h.instance_id = sm_instances.id"
    " AND h.sequence = (SELECT max(n.sequence) FROM sm_history n"
    " WHERE n.instance_id = sm_instances.id)"
    " AND h.sequence > sm_instances.last_sequence AND h.entry_sequence IS NOT NULL"
)


def upgrade() -> None:
    op.add_column("sm_history", sa.Column("entry_sequence", sa.Integer(), nullable=True))


def downgrade() -> None:
    moved = {
        "current": "h.to_state",
        "updated_at": "h.time",
        "entry_sequence": "h.entry_sequence",
        "last_sequence": "h.sequence",
    }
    assigned = ", ".join(
        f"{name} = ({_NEWEST.format(column=column)})" for name, column in moved.items()
    )
    # One statement: every subquery reads the row as it was before the UPDATE (its
    # last_sequence too, which it assigns).
    op.execute(f"UPDATE sm_instances SET {assigned} WHERE EXISTS ({_NEWEST.format(column='1')})")
    if op.get_bind().dialect.name == "sqlite":
        op.execute('ALTER TABLE sm_history DROP COLUMN "entry_sequence"')
    else:
        op.drop_column("sm_history", "entry_sequence")
