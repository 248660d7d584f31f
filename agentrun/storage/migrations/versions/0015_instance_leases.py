"""State machines: instances are leased to the replica that drives them (its timers, action
retries and invoked execution), with an epoch that fences a stale writer's commits.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sm_instances", sa.Column("owner", sa.String()))
    op.add_column(
        "sm_instances", sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("sm_instances", sa.Column("lease_expires_at", sa.Double()))
    op.create_index("ix_sm_instances_owner", "sm_instances", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_sm_instances_owner", table_name="sm_instances")
    # In place (no table rebuild on SQLite): sm_history and sm_timers reference sm_instances
    # with ON DELETE CASCADE.
    for column in ("lease_expires_at", "lease_epoch", "owner"):
        op.execute(f"ALTER TABLE sm_instances DROP COLUMN {column}")
