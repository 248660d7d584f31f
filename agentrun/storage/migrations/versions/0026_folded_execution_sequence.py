"""An execution's `last_sequence` may be behind its newest event on SQLite (issue 18, the chain
row): a turn that only appends events writes them alone.

A chain step's turn rewrote its execution's row for `last_sequence` alone (state, output,
vars, labels, usage, deadline as stored): one WAL page of a step's six. SQLite's turn writer
(sqlite_turns.py) now checks such a row under the transaction's write lock (its fence and
every other column as the turn says) and leaves it as it is; readers take the greater of the
row's `last_sequence` and its newest event's sequence (`schema.FOLDED_LAST_SEQUENCE`: records,
restores, claims). A turn of a finished execution, or one that changes
anything else, rewrites the row as before, so the events that retention deletes (finished
executions') are never the only place their sequence is kept. Nothing changes in the schema,
nor in any stored row: the upgrade has nothing to do.

The downgrade writes each row's folded sequence into it (what the older code reads there).
On PostgreSQL the rows are always exact: it changes nothing there.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_NEWEST = "(SELECT max(e.sequence) FROM events e WHERE e.execution_id = executions.id)"


def upgrade() -> None:
    """Every row is exact already: a reader's fold finds no newer event."""


def downgrade() -> None:
    op.execute(f"UPDATE executions SET last_sequence = {_NEWEST} WHERE last_sequence < {_NEWEST}")
