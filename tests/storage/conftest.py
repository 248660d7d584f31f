"""Backends for the storage tests: memory, SQLite and the shared PostgreSQL server.

PostgreSQL tests run in a database of their own (`agentrun_test_<random>`), created once per
session and dropped at the end, so they never see or leave data in the shared `test` database.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentrun.storage.base import Store

PG_ADMIN_URL = os.environ.get("AGENTRUN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_TABLES = "signals, events, nodes, executions, workflows"


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
    """Creates throwaway databases on the shared server and drops them at session end."""

    def __init__(self) -> None:
        self._created: list[str] = []
        self.error: str | None = None
        try:
            _pg_admin("SELECT 1")
        except Exception as exc:
            self.error = f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({exc}); run `make services`"

    def create_database(self) -> str:
        if self.error:
            pytest.skip(self.error)
        name = f"agentrun_test_{uuid.uuid4().hex[:12]}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{name}"

    def drop_all(self) -> None:
        for name in self._created:
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
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
