"""Leases renewed per replica (issue 18, idle executions): a replica renews one row of
`replica_leases` every lease/3 instead of every execution it owns. An execution's own
`lease_expires_at` still holds it too (set when it is created or claimed; a replica of the
previous version renews it as before).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_leases",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("lease_expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replica_leases"),
    )


def downgrade() -> None:
    op.drop_table("replica_leases")
