"""Signal waits on node records (issue 16, approvals): `nodes.wait` holds the latest wait of a
node or map item ({id, signal, since, token_sha256}), and a partial index finds the pending
ones (`ListWaits`) without reading other nodes.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
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
        batch.add_column(sa.Column("wait", Json))
    where = sa.text("state = 'WAITING' AND wait IS NOT NULL")
    op.create_index(
        "ix_nodes_pending_waits",
        "nodes",
        ["execution_id", "node_id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_nodes_pending_waits", table_name="nodes")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("wait")
