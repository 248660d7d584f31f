"""PostgreSQL: the events table is partitioned by execution id, i.e. by creation time.

Execution ids start with their creation time in milliseconds (12 hex digits), and a child's id
starts with its parent's, so a range of ids is a window of creation time that holds whole
executions. A partition can then be dropped once every execution in it has ended (retention,
see SqlStore.maintain_events) and the primary key (execution_id, sequence) stays a real
uniqueness guarantee, which a partition by event time could not keep. SQLite is unchanged.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    op.execute(
        "ALTER TABLE events_unpartitioned RENAME CONSTRAINT pk_events TO pk_events_unpartitioned"
    )
    op.execute(
        "ALTER TABLE events_unpartitioned RENAME CONSTRAINT fk_events_execution_id_executions "
        "TO fk_events_unpartitioned_execution_id"
    )
    op.execute(
        """
        CREATE TABLE events (
            execution_id VARCHAR NOT NULL,
            sequence INTEGER NOT NULL,
            type VARCHAR NOT NULL,
            node_id VARCHAR,
            data JSONB,
            time DOUBLE PRECISION NOT NULL,
            CONSTRAINT pk_events PRIMARY KEY (execution_id, sequence),
            CONSTRAINT fk_events_execution_id_executions FOREIGN KEY (execution_id)
                REFERENCES executions (id) ON DELETE CASCADE
        ) PARTITION BY RANGE (execution_id)
        """
    )
    # Ids outside every daily window (hand-made ones) land here; it is never dropped.
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    op.execute("INSERT INTO events SELECT * FROM events_unpartitioned")
    op.execute("DROP TABLE events_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE events_plain (LIKE events INCLUDING ALL)")
    op.execute("INSERT INTO events_plain SELECT * FROM events")
    op.execute("DROP TABLE events")
    op.execute("ALTER TABLE events_plain RENAME TO events")
