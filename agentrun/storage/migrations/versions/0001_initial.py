"""Initial schema: workflows, executions, nodes, events, signals.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration must not change when schema.py changes later.
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", "version", name="pk_workflows"),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("input", Json),
        sa.Column("output", Json),
        sa.Column("error", Json),
        sa.Column("vars", Json),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("request_id", sa.String()),
        sa.Column("request_hash", sa.String()),
        sa.Column("parent_id", sa.String()),
        sa.Column("parent_node", sa.String()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double()),
        sa.Column("ended_at", sa.Double()),
        sa.Column("deadline", sa.Double()),
        sa.Column("last_sequence", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("labels", Json),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
        sa.UniqueConstraint("tenant", "request_id", name="uq_executions_tenant_request_id"),
    )
    op.create_index("ix_executions_tenant_id", "executions", ["tenant", "id"])
    op.create_index("ix_executions_tenant_workflow_id", "executions", ["tenant", "workflow", "id"])
    op.create_index("ix_executions_state", "executions", ["state"])
    op.create_table(
        "nodes",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("input", Json),
        sa.Column("output", Json),
        sa.Column("error", Json),
        sa.Column("skip_reason", sa.Text()),
        sa.Column("started_at", sa.Double()),
        sa.Column("ended_at", sa.Double()),
        sa.Column("wake_at", sa.Double()),
        sa.Column("completed_order", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("execution_id", "node_id", name="pk_nodes"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_nodes_execution_id_executions",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "events",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("node_id", sa.String()),
        sa.Column("data", Json),
        sa.Column("time", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "sequence", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_events_execution_id_executions",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "signals",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("data", Json),
        sa.Column("signal_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("consumed_by", sa.String()),
        sa.PrimaryKeyConstraint("execution_id", "seq", name="pk_signals"),
        sa.UniqueConstraint("execution_id", "signal_id", name="uq_signals_execution_id_signal_id"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_signals_execution_id_executions",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    for table in ("signals", "events", "nodes", "executions", "workflows"):
        op.drop_table(table)
