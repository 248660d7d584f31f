"""Backends for the storage tests: memory, SQLite and the shared PostgreSQL server.

PostgreSQL tests run in a database of their own (`agentrun_test_<random>`), created once per
session and dropped at the end, so they never see or leave data in the shared `test` database.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentrun.storage.base import Store
from tests.storage.templates import migrated_sqlite

PG_ADMIN_URL = os.environ.get("AGENTRUN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_TABLES = "signals, events, nodes, executions, workflows, replica_leases"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _pg_admin(sql: str) -> None:
    """Runs one statement on the admin database, on a thread of its own: fixtures that call
    this may be set up while a test's event loop is already running."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


class PgServer:
    """Creates throwaway databases on the shared server and drops them when done with them.

    Dropping is handed to a thread of its own (`_Dropper`): PostgreSQL's DROP DATABASE waits for
    a checkpoint (1 to 3 s on a busy machine), which can overlap the tests that run meanwhile;
    the session waits for the last drops at its end (`wait_for_drops`, tests/conftest.py)."""

    def __init__(self) -> None:
        self._created: list[str] = []
        self.error: str | None = None
        try:
            _pg_admin("SELECT 1")
        except Exception as exc:
            self.error = f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({exc}); run `make services`"

    def create_database(self, *, migrated: bool = False) -> str:
        """A new database: empty, or (`migrated`) a copy of the schema at the migrations'
        head (tests/storage/templates.py), for tests that want a working store, not a first
        migration."""
        if self.error:
            pytest.skip(self.error)
        name = f"agentrun_test_{uuid.uuid4().hex[:12]}"
        if migrated:
            from tests.storage.templates import pg_template

            _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template(self._url)}"')
        else:
            _pg_admin(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self._url(name)

    @staticmethod
    def _url(name: str) -> str:
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{name}"

    def release(self, url: str) -> None:
        """Drops one database of this server's now (in the background): its test is over."""
        name = url.rsplit("/", 1)[1]
        if name in self._created:
            self._created.remove(name)
            _DROPPER.drop(name)

    def drop_all(self) -> None:
        for name in self._created:
            _DROPPER.drop(name)
        self._created.clear()


class _Dropper:
    """Drops databases one at a time on a thread of its own, in the order given."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def drop(self, name: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="pg-dropper", daemon=True)
            self._thread.start()
        self._queue.put(name)

    def _run(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # reported at the session's end
                self.errors.append(f"{name}: {exc}")

    def wait(self) -> list[str]:
        """Waits for the queued drops; returns the databases that could not be dropped."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        errors, self.errors = self.errors, []
        return errors


_DROPPER = _Dropper()


def wait_for_drops() -> list[str]:
    """Called once at the session's end: every database handed to `release`/`drop_all` is
    gone when this returns (or named in the answer, with why it is not)."""
    from tests.storage.templates import drop_pg_template

    drop_pg_template()
    return _DROPPER.wait()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """One database for the whole contract suite; each test starts from empty tables."""
    return pg_server.create_database()


@dataclass
class Backend:
    name: str
    # Opens a store on the same underlying data (for the memory backend: the same store).
    open: Callable[[], Awaitable[Store]]

    @property
    def durable(self) -> bool:
        return self.name != "memory"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened: list[Store] = []

    if request.param == "memory":
        memory = pytest.importorskip("agentrun.storage.memory")
        shared = memory.MemoryStore()

        async def open_memory() -> Store:
            await shared.open()
            return shared

        yield Backend("memory", open_memory)
        return

    from agentrun.storage.sql import SqlStore

    if request.param == "sqlite":
        url = migrated_sqlite(tmp_path / "store.db")
    else:
        url = request.getfixturevalue("pg_url")
        cleaner = SqlStore(url)
        await cleaner.open()
        async with cleaner.database.connect() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {_TABLES}")
            await conn.commit()
        await cleaner.close()

    async def open_sql() -> Store:
        store = SqlStore(url)
        await store.open()
        opened.append(store)
        return store

    yield Backend(request.param, open_sql)
    for store in opened:
        await store.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
