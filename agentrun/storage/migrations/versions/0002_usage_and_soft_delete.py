"""Token usage on executions and nodes; workflows are deleted softly.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("deleted_at", sa.Double()))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("usage", Json))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("usage", Json))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("usage")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("usage")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("deleted_at")
