"""Alembic environment for the store, run in-process by `SqlStore.open()`.

There is no alembic.ini: the store builds the Config in code and hands over a connection that
is already inside a transaction, so the whole upgrade commits or rolls back as one. On
PostgreSQL an advisory lock serialises replicas that start together against one database; on
SQLite the caller's `BEGIN IMMEDIATE` does the same.

A new revision: copy versions/0001_initial.py, set `revision`/`down_revision`, and change
schema.py in the same commit; tests/storage/test_migrations.py fails until the two agree.
"""

from __future__ import annotations

from alembic import context

from agentrun.storage.schema import metadata

# Any constant works; it only has to be the same for every replica.
_PG_MIGRATION_LOCK = 0x61676E74


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("agentrun migrations run only through SqlStore.open()")
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=dialect == "sqlite",
    )
    if dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    with context.begin_transaction():
        context.run_migrations()


_run()
