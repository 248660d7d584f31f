"""The SQL schema of the store, as SQLAlchemy Core tables.

This is the target the Alembic migrations must reach: a test migrates an empty database and
compares it with this metadata, so the two cannot drift apart silently. Times are epoch seconds
in double precision (a float4 would lose seconds); payloads are JSON, JSONB on PostgreSQL.
Strings carry no length: ids and names are bounded by the API layer, not by the schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

# Python None is stored as SQL NULL, so "no output" and "absent" are one thing in queries.
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# Explicit names keep Alembic's autogenerate comparison and future migrations stable.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", Json, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("input", Json),
    sa.Column("output", Json),
    sa.Column("error", Json),
    sa.Column("vars", Json),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("request_id", sa.String()),
    sa.Column("request_hash", sa.String()),
    sa.Column("parent_id", sa.String()),
    sa.Column("parent_node", sa.String()),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("deadline", sa.Double),
    sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("labels", Json),
    # NULL request ids never collide, so only idempotent starts are constrained.
    sa.UniqueConstraint("tenant", "request_id"),
    sa.Index(None, "tenant", "id"),
    sa.Index(None, "tenant", "workflow", "id"),
    sa.Index(None, "state"),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("node_id", sa.String(), primary_key=True),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("input", Json),
    sa.Column("output", Json),
    sa.Column("error", Json),
    sa.Column("skip_reason", sa.Text),
    sa.Column("started_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("wake_at", sa.Double),
    sa.Column("completed_order", sa.Integer, nullable=False, server_default="0"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("node_id", sa.String()),
    sa.Column("data", Json),
    sa.Column("time", sa.Double, nullable=False),
)

signals = sa.Table(
    "signals",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("data", Json),
    sa.Column("signal_id", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("consumed_by", sa.String()),
    sa.UniqueConstraint("execution_id", "signal_id"),
)
