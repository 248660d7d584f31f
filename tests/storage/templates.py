"""Migrated databases for tests that need a working store, without migrating each one.

Migrating an empty database (Alembic, 16 revisions) costs about 0.3 s of CPU on SQLite and
0.4 s of client CPU plus 1.5 s or more of DDL on PostgreSQL; the suite opens a fresh store a
few hundred times. Each process migrates one template per backend instead, the first time a
test asks, and copies it: a SQLite file is copied (a few ms), a PostgreSQL database is created
with `CREATE DATABASE ... TEMPLATE` (a file-level copy on the server). `SqlStore.open` then
finds the schema at the migrations' head and migrates nothing, exactly as when it reopens a
database it migrated before.

Tests of the migrations themselves (tests/storage/test_migrations.py) and tests of a first
start on an empty database keep asking for empty ones.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

_lock = threading.Lock()
_sqlite_template: Path | None = None


def _migrate(url: str) -> None:
    """Opens (so migrates) and closes a store on `url`, on a thread of its own: callers may be
    fixtures set up while a test's event loop runs."""
    from agentrun.storage.sql import SqlStore

    async def run() -> None:
        store = SqlStore(url)
        await store.open()
        await store.close()

    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="migrate-template")
    thread.start()
    thread.join()
    if error:
        raise error[0]


def _template_file() -> Path:
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            folder = Path(tempfile.mkdtemp(prefix="agentrun-sqlite-template-"))
            atexit.register(shutil.rmtree, folder, True)
            work = folder / "migrating.db"
            _migrate(f"sqlite+aiosqlite:///{work}")
            # A consistent single-file copy, whatever the WAL still holds.
            final = folder / "template.db"
            with sqlite3.connect(work) as src, sqlite3.connect(final) as dst:
                src.backup(dst)
            src.close()
            dst.close()
            _sqlite_template = final
        return _sqlite_template


def migrated_sqlite(path: Path | str, *, driver: str = "sqlite+aiosqlite") -> str:
    """A SQLite database at `path` (which must not exist yet) with the schema at the
    migrations' head, as if a store had opened it before; returns its URL."""
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists: a migrated copy would overwrite it")
    shutil.copyfile(_template_file(), target)
    return f"{driver}:///{target}"


_pg_template: str | None = None


def pg_template(url_of: Callable[[str], str]) -> str:
    """The name of this process's migrated PostgreSQL template database (created on first
    use; `url_of(name)` is its URL). Nothing stays connected to it, as CREATE DATABASE ...
    TEMPLATE requires."""
    global _pg_template
    from tests.storage.conftest import _pg_admin

    with _lock:
        if _pg_template is None:
            name = f"agentrun_template_{uuid.uuid4().hex[:12]}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            try:
                _migrate(url_of(name))
            except BaseException:
                _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                raise
            _pg_template = name
        return _pg_template


def drop_pg_template() -> None:
    """Drops the template at the session's end (with the other throwaway databases)."""
    global _pg_template
    from tests.storage.conftest import _DROPPER

    with _lock:
        if _pg_template is not None:
            _DROPPER.drop(_pg_template)
            _pg_template = None
