"""The Alembic migrations build exactly the schema that schema.py declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from agentrun.storage.schema import metadata
from agentrun.storage.sql import SqlStore

from .conftest import PgServer

MIGRATIONS = Path(__import__("agentrun.storage.sql").storage.sql.__file__).with_name("migrations")


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/fresh/migrated.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


def _inspect(conn: sa.Connection) -> tuple[list, list, str | None]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            # PostgreSQL's event partitions (events_default, events_dYYYYMMDD) are storage
            # of the partitioned `events` table, not tables of their own.
            "include_name": lambda name, type_, _parents: (
                not (type_ == "table" and name.startswith("events_"))
            ),
        },
    )
    # Negative control: the comparison does see a schema that differs.
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["events"].append_column(sa.Column("extra", sa.Integer))
    return (
        compare_metadata(context, metadata),
        compare_metadata(context, drifted),
        context.get_current_revision(),
    )


async def test_migrated_schema_matches_metadata(fresh_url: str) -> None:
    store = SqlStore(fresh_url)
    await store.open()
    await store.open()  # idempotent
    await store.close()
    # A second process opening a migrated database must not migrate again.
    store = SqlStore(fresh_url)
    await store.open()
    try:
        async with store.database.connect() as conn:
            diffs, drift, revision = await conn.run_sync(_inspect)
    finally:
        await store.close()
    assert diffs == []
    assert [d[0] for d in drift] == ["add_column"]
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert revision == head
    assert {"workflows", "executions", "nodes", "events", "signals"} <= set(metadata.tables)


def test_the_head_read_from_the_revision_files_is_alembics() -> None:
    """`SqlStore.open` compares the database with the head read from the files (no Alembic
    import); it must be the head Alembic computes."""
    from agentrun.storage import sqldb

    head = sqldb._head_from_files(MIGRATIONS / "versions")
    assert head is not None
    assert head == sqldb._alembic_head() == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_a_head_the_files_do_not_say_plainly_is_left_to_alembic(tmp_path: Path) -> None:
    from agentrun.storage import sqldb

    def write(name: str, text: str) -> None:
        (tmp_path / name).write_text(text)

    write("a.py", 'revision = "a"\ndown_revision = None\n')
    write("b.py", "revision: str = 'b'\ndown_revision: str | None = 'a'  # after a\n")
    assert sqldb._head_from_files(tmp_path) == "b"
    write("c.py", 'revision = "c"\ndown_revision = "a"\n')  # two heads
    assert sqldb._head_from_files(tmp_path) is None
    write("c.py", 'revision = "c"\ndown_revision = ("a", "b")\n')  # a merge
    assert sqldb._head_from_files(tmp_path) is None
    write("c.py", 'revision = "c"\ndown_revision = "b"\ndepends_on = "x"\n')
    assert sqldb._head_from_files(tmp_path) is None
    write("c.py", 'revision = "c"\ndown_revision = "b"\nbranch_labels = None\n')
    assert sqldb._head_from_files(tmp_path) == "c"
