"""State machines: instances, their history (every transition) and their durable timers.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here on purpose: a migration must not change when schema.py changes later.
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sm_instances",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("current", sa.String(), nullable=False),
        sa.Column("data", Json),
        sa.Column("input", Json),
        sa.Column("error", Json),
        sa.Column("request_id", sa.String()),
        sa.Column("request_hash", sa.String()),
        sa.Column("parent_id", sa.String()),
        sa.Column("parent_node", sa.String()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double()),
        sa.Column("last_sequence", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("entry_sequence", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("invoke_execution", sa.String()),
        sa.Column("labels", Json),
        sa.PrimaryKeyConstraint("id", name="pk_sm_instances"),
        sa.UniqueConstraint("tenant", "request_id", name="uq_sm_instances_tenant_request_id"),
    )
    op.create_index("ix_sm_instances_tenant_id", "sm_instances", ["tenant", "id"])
    op.create_index(
        "ix_sm_instances_tenant_workflow_id", "sm_instances", ["tenant", "workflow", "id"]
    )
    op.create_index("ix_sm_instances_state", "sm_instances", ["state"])
    op.create_table(
        "sm_history",
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("event_id", sa.String()),
        sa.Column("event_data", Json),
        sa.Column("from_state", sa.String(), nullable=False),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.Column("transition_index", sa.Integer()),
        sa.Column("actions", Json),
        sa.Column("assigned", Json),
        sa.Column("instance_state", sa.String(), nullable=False),
        sa.Column("error", Json),
        sa.Column("reentered", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "sequence", name="pk_sm_history"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["sm_instances.id"],
            name="fk_sm_history_instance_id_sm_instances",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("instance_id", "event_id", name="uq_sm_history_instance_id_event_id"),
    )
    op.create_table(
        "sm_timers",
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("timer_index", sa.Integer(), nullable=False),
        sa.Column("fire_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "key", name="pk_sm_timers"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["sm_instances.id"],
            name="fk_sm_timers_instance_id_sm_instances",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sm_timers_fire_at", "sm_timers", ["fire_at"])


def downgrade() -> None:
    op.drop_index("ix_sm_timers_fire_at", table_name="sm_timers")
    op.drop_table("sm_timers")
    op.drop_table("sm_history")
    op.drop_index("ix_sm_instances_state", table_name="sm_instances")
    op.drop_index("ix_sm_instances_tenant_workflow_id", table_name="sm_instances")
    op.drop_index("ix_sm_instances_tenant_id", table_name="sm_instances")
    op.drop_table("sm_instances")
