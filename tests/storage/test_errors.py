"""Database failures reach callers as StoreError (so the server can answer UNAVAILABLE)."""

from __future__ import annotations

import socket
import time

import pytest

from agentrun.storage.base import StoreError
from agentrun.storage.records import Batch, EventRecord
from agentrun.storage.sql import SqlStore

from .conftest import PgServer, _pg_admin
from .factories import execution_record


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_postgres_raises_store_error() -> None:
    store = SqlStore(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/nothing")
    started = time.monotonic()
    with pytest.raises(StoreError):
        await store.open()
    assert time.monotonic() - started < 5
    with pytest.raises(StoreError):
        await store.get_execution("x")


async def test_lost_postgres_connections_raise_store_error_then_recover(
    pg_server: PgServer,
) -> None:
    url = pg_server.create_database()
    store = SqlStore(url)
    await store.open()
    try:
        await store.create_execution(execution_record("ex-1"))
        database = url.rsplit("/", 1)[1]
        _pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        with pytest.raises(StoreError):
            await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        # The pool drops its dead connections: the next calls work again.
        await store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        assert [e.sequence for e in await store.list_events("ex-1")] == [1]
    finally:
        await store.close()


async def test_closed_store_refuses_calls(tmp_path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    with pytest.raises(StoreError):
        await store.commit(Batch())
    await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        await store.commit(Batch())
    with pytest.raises(StoreError):
        await store.get_execution("x")


async def test_close_waits_for_queued_commits(tmp_path) -> None:
    import asyncio

    url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    store = SqlStore(url)
    await store.open()
    await store.create_execution(execution_record("ex-1"))
    commits = [
        asyncio.create_task(store.commit(Batch(events=[EventRecord("ex-1", i, "x", time.time())])))
        for i in range(1, 51)
    ]
    await asyncio.sleep(0)  # let them enqueue
    await store.close()
    await asyncio.gather(*commits)
    reopened = SqlStore(url)
    await reopened.open()
    try:
        assert len(await reopened.list_events("ex-1")) == 50
    finally:
        await reopened.close()


@pytest.mark.parametrize(
    "url",
    ["postgresql://localhost/x", "sqlite:///x.db", "mysql+aiomysql://h/x", "sqlite+aiosqlite://"],
)
def test_unsupported_urls_are_refused_early(url: str) -> None:
    with pytest.raises(ValueError):
        SqlStore(url)


def test_synchronous_is_validated() -> None:
    with pytest.raises(ValueError):
        SqlStore("sqlite+aiosqlite:///x.db", synchronous="SOMETIMES")


@pytest.fixture(params=["sqlite", "postgresql"])
async def sql_store(request: pytest.FixtureRequest, tmp_path) -> SqlStore:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    store = SqlStore(url)
    await store.open()
    yield store
    await store.close()


async def test_unstorable_payload_fails_its_batch_only(sql_store: SqlStore) -> None:
    import asyncio

    from agentrun.storage.records import NodeRecord, NodeState

    await sql_store.create_execution(execution_record("ex-1"))
    unstorable = [object()]
    if sql_store.dialect == "postgresql":
        # JSONB has no representation for U+0000 or a lone surrogate.
        unstorable += ["nul \u0000 inside", {"\ud800": 1}]
    bad = [
        Batch(nodes=[NodeRecord("ex-1", f"bad{i}", NodeState.SUCCEEDED, output=value)])
        for i, value in enumerate(unstorable)
    ]
    good = [Batch(events=[EventRecord("ex-1", i, "x", time.time())]) for i in range(1, 11)]
    results = await asyncio.gather(
        *(sql_store.commit(b) for b in good[:5] + bad + good[5:]), return_exceptions=True
    )
    errors = [r for r in results if r is not None]
    assert len(errors) == len(bad)
    # ValueError, not StoreError: retrying the same batch cannot succeed.
    assert all(isinstance(e, ValueError) and not isinstance(e, StoreError) for e in errors)
    assert len(await sql_store.list_events("ex-1")) == 10
    assert await sql_store.get_nodes("ex-1") == []


async def test_unstorable_values_outside_commit_raise_value_error(sql_store: SqlStore) -> None:
    from agentrun.storage.records import SignalRecord, WorkflowRecord

    record = execution_record("ex-bad")
    record.input = {"x": object()}
    with pytest.raises(ValueError):
        await sql_store.create_execution(record)
    assert await sql_store.get_execution("ex-bad") is None
    with pytest.raises(ValueError):
        await sql_store.create_workflow(WorkflowRecord("t", "wf", 0, {"x": {1, 2}}, 0.0))
    await sql_store.create_execution(execution_record("ex-1"))
    with pytest.raises(ValueError):
        await sql_store.add_signal(SignalRecord("ex-1", "go", object(), "s1", 0.0))
    with pytest.raises(KeyError):
        await sql_store.add_signal(SignalRecord("ghost", "go", None, "s1", 0.0))


async def test_commits_fail_instead_of_hanging_when_the_writer_dies(tmp_path) -> None:
    import asyncio

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    await store.open()
    try:
        await store.create_execution(execution_record("ex-1"))
        waiting = asyncio.create_task(
            store.commit(Batch(events=[EventRecord("ex-1", 1, "x", time.time())]))
        )
        store.writer.task.cancel()  # as at event-loop shutdown
        with pytest.raises(StoreError):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(StoreError):
            await store.commit(Batch())
    finally:
        await store.close()
