"""For tests of one migration on a SQLite file: the file migrated up or down to a revision by
Alembic itself (not through a store, which always goes to the head), and read with plain
sqlite3, so what is checked is the file, not what the store under test makes of it; and the
WAL frames a file's writes cost (`wal_frames`), which the tests of a table's layout count."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from agentrun.storage import schema as db

MIGRATIONS = Path(db.__file__).with_name("migrations")
# A WAL is a 32-byte header, then one frame per page written: a 24-byte header and the page
# (the stores' files have 4 KB pages).
_WAL_HEADER, _FRAME_HEADER, _PAGE = 32, 24, 4096


def migrate(path: Path, revision: str, *, down: bool = False, foreign_keys: bool = False) -> None:
    """Upgrades (or, `down`, downgrades) the file at `path` to `revision` in one transaction;
    `foreign_keys` turns SQLite's enforcement on for it, as a store's connections have it."""
    engine = sa.create_engine(f"sqlite:///{path}")
    if foreign_keys:
        sa.event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA foreign_keys=ON"))
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def query(path: Path, sql: str) -> list[Any]:
    """What `sql` returns on the file, on a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wal_frames(path: Path) -> int:
    """The frames in the WAL of the SQLite file at `path`: the pages written since the WAL
    last started over (after a `PRAGMA wal_checkpoint(TRUNCATE)` on a side connection)."""
    return (os.path.getsize(f"{path}-wal") - _WAL_HEADER) // (_PAGE + _FRAME_HEADER)
