"""The state machine tables (migration 0005 and later): instances, their inputs, history and
timers.

Rows <-> records for these tables live in agentrun/storage/machine_rows.py (and the direct
writers, sqlite_instances.py and pg_instances.py). `schema` re-exports them: the store's code
names them `schema.sm_instances` and so on, as every other table.
"""

from __future__ import annotations

import sqlalchemy as sa

from agentrun.storage.schema_base import Json, metadata

sm_instances = sa.Table(
    "sm_instances",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # Lifecycle: ACTIVE, COMPLETED, FAILED, CANCELLED.
    sa.Column("state", sa.String(), nullable=False),
    # The machine state the instance is in.
    sa.Column("current", sa.String(), nullable=False),
    sa.Column("data", Json),
    # The input is in `sm_inputs` (migration 0021).
    sa.Column("error", Json),
    sa.Column("request_id", sa.String()),
    sa.Column("request_hash", sa.String()),
    sa.Column("parent_id", sa.String()),
    sa.Column("parent_node", sa.String()),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("entry_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoke_execution", sa.String()),
    sa.Column("labels", Json),
    # An event whose action waits for its next attempt (migration 0009).
    sa.Column("pending", Json),
    # The replica driving the instance and its lease (migration 0015).
    sa.Column("owner", sa.String()),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", sa.Double),
    sa.UniqueConstraint("tenant", "request_id"),
    sa.Index(None, "tenant", "id"),
    sa.Index(None, "tenant", "workflow", "id"),
    sa.Index(None, "state"),
    # What ended lately: a replica catching up after a LISTEN outage reads it (0013).
    sa.Index(None, "ended_at"),
    sa.Index(None, "owner"),
)

# An instance's input, which never changes, apart from the row every event rewrites (migration
# 0021): on SQLite an UPDATE rewrites the whole row, a large input's overflow pages with it
# whenever the row's size changes (an event of an instance with a 50 KB input wrote 10 WAL
# pages, not 3). Written at creation, only for an input that is not None (none: no row).
# WITHOUT ROWID on SQLite: the key's b-tree alone, one page fewer at creation.
sm_inputs = sa.Table(
    "sm_inputs",
    metadata,
    sa.Column(
        "instance_id",
        sa.String(),
        sa.ForeignKey("sm_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("input", Json),
    sqlite_with_rowid=False,
)

sm_history = sa.Table(
    "sm_history",
    metadata,
    sa.Column(
        "instance_id",
        sa.String(),
        sa.ForeignKey("sm_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("time", sa.Double, nullable=False),
    sa.Column("event", sa.String(), nullable=False),
    sa.Column("event_id", sa.String()),
    sa.Column("event_data", Json),
    sa.Column("from_state", sa.String(), nullable=False),
    sa.Column("to_state", sa.String(), nullable=False),
    sa.Column("transition_index", sa.Integer),
    sa.Column("actions", Json),
    sa.Column("assigned", Json),
    sa.Column("instance_state", sa.String(), nullable=False),
    sa.Column("error", Json),
    sa.Column("reentered", sa.Boolean, nullable=False),
    # Migration 0023. Not NULL: the instance's `entry_sequence` after this entry, which ends a
    # commit that left its `sm_instances` row as it was (SQLite, sqlite_instances.py): only
    # `current`, `updated_at`, `last_sequence` and `entry_sequence` moved, and this entry
    # holds them (to_state, time, sequence and this). Readers fold the newest such entry past
    # the row's `last_sequence` into the row (machine_rows.py). NULL on PostgreSQL, whose
    # commits always rewrite the row.
    sa.Column("entry_sequence", sa.Integer),
    # An event id is applied once per instance; NULL ids never collide, and are not indexed
    # (migration 0020: a page fewer per event written without an id).
    sa.Index(
        "uq_sm_history_instance_id_event_id",
        "instance_id",
        "event_id",
        unique=True,
        postgresql_where=sa.text("event_id IS NOT NULL"),
        sqlite_where=sa.text("event_id IS NOT NULL"),
    ),
    # A rowid table on SQLite (0022 made it WITHOUT ROWID, 0025 undid it): an index b-tree
    # keeps only ~1,000 bytes of a row in place on a 4 KiB page, and an entry holds the
    # event's data (benchmarks/rowid_layouts.py: 1 KB +44% to +58% WAL frames an event,
    # +189% pages). SQLite's notification poller seeks new entries by rowid.
)

sm_timers = sa.Table(
    "sm_timers",
    metadata,
    sa.Column(
        "instance_id",
        sa.String(),
        sa.ForeignKey("sm_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("timer_index", sa.Integer, nullable=False),
    sa.Column("fire_at", sa.Double, nullable=False),
    sa.Index(None, "fire_at"),
)
