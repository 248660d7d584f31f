"""For tests of one migration on either backend (SQLite and a fresh PostgreSQL database): the
database of the test's `url` migrated by Alembic itself to a revision (not through a store,
which always goes to the head), and read or filled through a connection of its own, so what
is checked is what the migration left, not what the store under test makes of it.
(tests/storage/sqlite_migrations.py is the same for a SQLite file read with plain sqlite3.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from agentrun.storage import schema as db

from .conftest import PgServer

MIGRATIONS = Path(db.__file__).with_name("migrations")


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of the kind `request.param` names ("sqlite" or "postgresql"): the
    body of each migration test's `url` fixture."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


async def on(url: str, work: Callable[[sa.Connection], Any]) -> Any:
    """What `work` returns, run in one transaction on a connection of its own."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def migrator(revision: str, *, down: bool = False) -> Callable[[sa.Connection], None]:
    """A `work` for `on` that upgrades (or, `down`, downgrades) the database to `revision`."""

    def migrate(conn: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)

    return migrate
