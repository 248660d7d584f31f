"""Executions and instances are indexed by `ended_at`.

A replica whose LISTEN connection was down reads, pass after pass, what ended since the outage
began (agentrun/storage/notifications.py): with the index that is a range scan, not a scan of
every execution ever run.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_executions_ended_at", "executions", ["ended_at"])
    op.create_index("ix_sm_instances_ended_at", "sm_instances", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_sm_instances_ended_at", table_name="sm_instances")
    op.drop_index("ix_executions_ended_at", table_name="executions")
