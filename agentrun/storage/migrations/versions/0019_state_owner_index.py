"""Executions are indexed by (state, owner), in place of (state).

Every replica reads, every lease/3, when the next lease held by another replica expires
(`next_lease_expiry`): with `state` alone that read every unfinished execution, its own
included (idle executions can be most of them). The new index reads only the others' rows, and
serves every query the old one did (its first column).

Revision ID: 0019
Revises: 0017
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_executions_state_owner", "executions", ["state", "owner"])
    op.drop_index("ix_executions_state", table_name="executions")


def downgrade() -> None:
    op.create_index("ix_executions_state", "executions", ["state"])
    op.drop_index("ix_executions_state_owner", table_name="executions")
