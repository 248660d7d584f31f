"""Scheduler slots shared by the replicas of one PostgreSQL database: waiting and granted
calls, the replicas holding them (with a lease), rate-limit buckets and the turn cursor.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slot_tickets",
        sa.Column("replica", sa.String(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("bucket", sa.String()),
        sa.Column("exec_rank", sa.Integer(), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("news", sa.Boolean(), nullable=False),
        sa.Column("throttled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "n", name="pk_slot_tickets"),
    )
    op.create_index(
        "ix_slot_tickets_granted_tenant_target_exec_rank_node_rank_seq",
        "slot_tickets",
        ["granted", "tenant", "target", "exec_rank", "node_rank", "seq"],
    )
    op.create_index("ix_slot_tickets_replica_news", "slot_tickets", ["replica", "news"])
    op.create_table(
        "slot_replicas",
        sa.Column("replica", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("replica", name="pk_slot_replicas"),
    )
    op.create_table(
        "slot_buckets",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_slot_buckets"),
    )
    op.create_table(
        "slot_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cursor", sa.String(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slot_state"),
    )
    op.execute("INSERT INTO slot_state (id, cursor, next_seq) VALUES (1, '', 0)")


def downgrade() -> None:
    op.drop_table("slot_state")
    op.drop_table("slot_buckets")
    op.drop_table("slot_replicas")
    op.drop_index("ix_slot_tickets_replica_news", table_name="slot_tickets")
    op.drop_index(
        "ix_slot_tickets_granted_tenant_target_exec_rank_node_rank_seq", table_name="slot_tickets"
    )
    op.drop_table("slot_tickets")
