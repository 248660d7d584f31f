"""Fixtures of the durability tests: a throwaway database on the shared PostgreSQL (tests that
only kill agentrun processes), a private PostgreSQL server (tests that stop the database or kill
its backends), and a working folder for ledgers and logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.durability.common import run_sync
from tests.durability.pg import PrivatePostgres, find_bin
from tests.storage.conftest import PgServer


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        yield server
    finally:
        server.drop_all()


async def _migrate(url: str) -> None:
    from agentrun.storage.sql import SqlStore

    store = SqlStore(url)
    await store.open()
    await store.close()


@pytest.fixture
def pg_url(shared_pg: PgServer) -> Iterator[str]:
    """A fresh, migrated database on the shared server (dropped after the test)."""
    url = shared_pg.create_database(migrated=True)
    yield url
    shared_pg.release(url)


@pytest.fixture(scope="session")
def private_pg_template() -> Iterator[Path]:
    """The data folder of a stopped private server whose database is migrated: each
    `private_pg` starts on a copy of it instead of running initdb and the migrations."""
    if find_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with PrivatePostgres() as server:
        run_sync(_migrate(server.url))
        server.stop()
        yield server.data


@pytest.fixture
def private_pg(private_pg_template: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, which it may stop, start, and kill backends of."""
    with PrivatePostgres(template=private_pg_template) as server:
        yield server
