"""An instance's input moves out of `sm_instances` into `sm_inputs` (issue 18, the state machine
row).

Every event rewrites its instance's row. On SQLite an UPDATE rewrites the whole record, and
when the record's size changes (its `data` grew, a sequence number took a byte more) the
overflow pages of a large input are freed and written again: an event of an instance with a
50 KB input wrote 10 WAL pages, one without an input 3. The input never changes after
creation, so it now lives in a table of its own, written once (only for an input that is not
None), read beside the instance.

Every stored input is copied to `sm_inputs` (as its stored text or JSONB: nothing is decoded),
then the column is dropped (SQLite: ALTER TABLE DROP COLUMN, 3.35 and later, which rewrites the
table; the column is in no index or constraint). The downgrade adds the column back and copies
the inputs into it.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Frozen here on purpose (as 0009's): JSON text on SQLite, JSONB on PostgreSQL.
Json = sa.Text().with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sm_inputs",
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("input", Json, nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["sm_instances.id"],
            name="fk_sm_inputs_instance_id_sm_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name="pk_sm_inputs"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO sm_inputs (instance_id, input) "
        "SELECT id, input FROM sm_instances WHERE input IS NOT NULL"
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute('ALTER TABLE sm_instances DROP COLUMN "input"')
    else:
        op.drop_column("sm_instances", "input")


def downgrade() -> None:
    op.add_column("sm_instances", sa.Column("input", Json, nullable=True))
    op.execute(
        "UPDATE sm_instances SET input = "
        "(SELECT i.input FROM sm_inputs i WHERE i.instance_id = sm_instances.id)"
    )
    op.drop_table("sm_inputs")
