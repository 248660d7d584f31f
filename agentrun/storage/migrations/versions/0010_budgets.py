"""Token and cost budgets: what each budget spent per period, and the reservations of the
calls running against it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_spend",
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("period", sa.String(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "period", name="pk_budget_spend"),
    )
    op.create_table(
        "budget_holds",
        sa.Column("hold", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("period", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("hold", "scope", "period", name="pk_budget_holds"),
    )
    op.create_index("ix_budget_holds_scope_period", "budget_holds", ["scope", "period"])
    op.create_index("ix_budget_holds_owner", "budget_holds", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_budget_holds_owner", table_name="budget_holds")
    op.drop_index("ix_budget_holds_scope_period", table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_table("budget_spend")
