"""Nodes paused on spent retries (issue 16 item 5, `on_exhausted: pause`): `nodes.exhausted`
holds {paused, attempt} while the execution waits for an operator and {base, args} once it
resumed, so both survive a restart.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# As schema.Json: JSONB on PostgreSQL, JSON text in a TEXT column on SQLite (migration 0007).
Json = (
    sa.JSON(none_as_null=True)
    .with_variant(JSONB(none_as_null=True), "postgresql")
    .with_variant(sa.Text(), "sqlite")
)


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("exhausted", Json))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("exhausted")
