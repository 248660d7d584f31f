"""State machines: an instance's pending event, stored while one of its actions waits for its
next attempt (with a retry timer in sm_timers), so that the retry survives a restart.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration must not change when schema.py changes later. JSON text
# in a TEXT column on SQLite, as migration 0007 made every payload column.
Json = sa.Text().with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.add_column("sm_instances", sa.Column("pending", Json))


def downgrade() -> None:
    # No table rebuild on SQLite (3.35+ drops a column in place): sm_history and sm_timers
    # reference sm_instances with ON DELETE CASCADE.
    op.execute("ALTER TABLE sm_instances DROP COLUMN pending")
