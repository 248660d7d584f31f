"""Execution admission shared by the replicas: the executions holding a place in their
tenant's quota or concurrency key, and those waiting for one.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admissions",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("ckey", sa.String()),
        sa.Column("key_limit", sa.Integer(), nullable=False),
        sa.Column("running", sa.Boolean(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_admissions"),
    )
    op.create_index("ix_admissions_tenant_running", "admissions", ["tenant", "running"])
    op.create_index("ix_admissions_tenant_ckey", "admissions", ["tenant", "ckey"])
    op.create_table(
        "admission_tenants",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_admission_tenants"),
    )


def downgrade() -> None:
    op.drop_table("admission_tenants")
    op.drop_index("ix_admissions_tenant_ckey", table_name="admissions")
    op.drop_index("ix_admissions_tenant_running", table_name="admissions")
    op.drop_table("admissions")
