"""Remote workers: calls of the tools they serve (rows with leases), the connected worker
sessions, and the last declaration of each remote tool (docs/workers.md).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration must not change when schema.py changes later. JSON text
# in a TEXT column on SQLite, as migration 0007 made every payload column.
Json = sa.Text().with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "worker_calls",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("labels", Json),
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("args", Json),
        sa.Column("deadline", sa.Double()),
        sa.Column("trace", Json),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("caller_expires", sa.Double(), nullable=False),
        sa.Column("worker_id", sa.String()),
        sa.Column("lease_expires", sa.Double()),
        sa.Column("result", Json),
        sa.Column("error", Json),
        sa.Column("progress", Json),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_worker_calls"),
    )
    op.create_index("ix_worker_calls_state_tool", "worker_calls", ["state", "tool"])
    op.create_index("ix_worker_calls_execution_id", "worker_calls", ["execution_id"])
    op.create_index("ix_worker_calls_worker_id", "worker_calls", ["worker_id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("replica", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("labels", Json),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("tools", Json),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("connected_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_tenant_id", "workers", ["tenant", "id"])
    op.create_table(
        "worker_tools",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("definition", Json),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_worker_tools"),
    )


def downgrade() -> None:
    op.drop_table("worker_tools")
    op.drop_index("ix_workers_tenant_id", table_name="workers")
    op.drop_table("workers")
    op.drop_index("ix_worker_calls_worker_id", table_name="worker_calls")
    op.drop_index("ix_worker_calls_execution_id", table_name="worker_calls")
    op.drop_index("ix_worker_calls_state_tool", table_name="worker_calls")
    op.drop_table("worker_calls")
