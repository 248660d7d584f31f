"""Unloaded (waiting) executions on shared stores (issue 18): a signal, a control request or
a timer sent through another replica reaches the owner, which rebuilds the run from the
store; a restart and a take-over find them as any unfinished execution; the owner keeps
their leases while they are out of memory. SQLite (two processes' worth of engines on one
file, polling) and PostgreSQL (NOTIFY)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.dag import runs as runs_module
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.records import ExecutionState
from agentrun.storage.sql import SqlStore
from tests.engine.conftest import eventually
from tests.engine.test_idle_unload import APPROVE

LEASE = 2.0

TIMED = """
name: timed
nodes:
  - {id: nap, wait: {duration: 1500ms}}
"""

Replica = Callable[[str], Awaitable[Engine]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def replicas(request: Any, tmp_path: Any) -> AsyncIterator[Replica]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/idle.db"
    else:
        url = request.getfixturevalue("pg_url")
    engines: list[Engine] = []
    stores: list[SqlStore] = []

    async def replica(name: str) -> Engine:
        store = SqlStore(url)
        await store.open()
        engine = Engine(
            store,
            tools=Registry(core_tools()),
            agents=default_agents(),
            config=EngineConfig(replica_id=name, lease_seconds=LEASE, seed=1),
        )
        await engine.start()
        engines.append(engine)
        stores.append(store)
        return engine

    yield replica
    for engine in engines:
        await engine.stop(grace=0)
    for store in stores:
        await store.close()


async def unloaded(engine: Engine, execution_id: str) -> None:
    await eventually(lambda: execution_id in engine.runs.idle)
    assert engine.runs.get(execution_id) is None


async def test_a_signal_through_another_replica_reaches_an_unloaded_execution(
    replicas: Replica,
) -> None:
    a = await replicas("a")
    b = await replicas("b")
    await a.create_workflow(load_workflow(APPROVE))
    ex = await a.start_execution("approve", {})
    await unloaded(a, ex.id)
    # Lease renewals go on while it is out of memory: it outlives several leases.
    await asyncio.sleep(LEASE * 1.5)
    record = await b.get_execution(ex.id)
    # Held by a's own lease (one row per replica since issue 18), not the execution's.
    assert (record.owner, record.lease_epoch) == ("a", 1)
    assert (await b.store.next_lease_expiry("b") or 0) > b.clock()
    assert ex.id not in b.runs  # b never took it over
    await b.signal(ex.id, "go", {"n": 1})
    final = await b.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": {"n": 1}}}
    assert (await b.get_execution(ex.id)).owner == "a"


async def test_pause_and_cancel_through_another_replica(replicas: Replica) -> None:
    a = await replicas("a")
    b = await replicas("b")
    await a.create_workflow(load_workflow(APPROVE))
    ex = await a.start_execution("approve", {})
    await unloaded(a, ex.id)
    assert (await b.pause(ex.id)).state is ExecutionState.PAUSED
    assert (await b.resume(ex.id)).state is not ExecutionState.PAUSED
    await unloaded(a, ex.id)
    assert (await b.cancel(ex.id)).state is ExecutionState.CANCELLED
    await eventually(lambda: ex.id not in a.runs)


async def test_a_timer_wakes_an_unloaded_execution_after_a_take_over(
    replicas: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "UNLOAD_MIN_SECONDS", 0.3)
    a = await replicas("a")
    await a.create_workflow(load_workflow(TIMED))
    ex = await a.start_execution("timed", {})
    await unloaded(a, ex.id)
    # a dies as kill -9 leaves it: nothing more reaches the database.
    a.draining = True
    a._maintenance.cancel()
    b = await replicas("b")
    final = await b.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.owner == "b"
    nodes = await b.get_nodes(ex.id)
    assert nodes[0].ended_at is not None and nodes[0].started_at is not None
    assert nodes[0].ended_at - nodes[0].started_at >= 1.5


async def test_a_restarted_replica_takes_its_unloaded_executions_back(replicas: Replica) -> None:
    a = await replicas("a")
    await a.create_workflow(load_workflow(APPROVE))
    ids = [(await a.start_execution("approve", {"i": i})).id for i in range(20)]
    await eventually(lambda: len(a.runs.idle) == 20)
    a.draining = True
    a._maintenance.cancel()
    again = await replicas("a")  # the same replica id: its executions at once
    await eventually(lambda: all(i in again.runs.idle for i in ids))
    assert not again.runs.live
    await again.signal(ids[3], "go", "yes")
    final = await again.wait(ids[3], timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": "yes"}}


async def test_a_reload_reads_the_store_once(replicas: Replica) -> None:
    """A signal to an unloaded execution waits for its reload: one statement reads the
    execution, its nodes and its signals (it took three reads, two of them of nodes and
    signals)."""
    a = await replicas("a")
    await a.create_workflow(load_workflow(APPROVE))
    ex = await a.start_execution("approve", {})
    await unloaded(a, ex.id)
    store = a.store
    assert isinstance(store, SqlStore)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        # This execution's reads only: the notification channel's catch-up pass (PostgreSQL,
        # while its LISTEN comes up) reads every unfinished execution's signals meanwhile.
        if ex.id in repr(parameters):
            statements.append(statement)

    pooled = store.database._engine
    assert pooled is not None
    # Every read connection: the pool's, and SQLite's own on the loop's thread (`read_now`).
    engines = [pooled.sync_engine, *filter(None, [getattr(store.database, "_now_reader", None)])]
    for engine in engines:
        sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        run = await a.runs.load(ex.id)
    finally:
        for engine in engines:
            sa_event.remove(engine, "before_cursor_execute", seen)
    assert run is not None and a.runs.get(ex.id) is run
    reads = [s for s in statements if "FROM nodes" in s or "FROM signals" in s]
    assert len(reads) == 1, statements
    assert "FROM executions" in reads[0]
    await a.signal(ex.id, "go", {"n": 2})
    final = await a.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": {"n": 2}}}


async def test_the_owner_holds_unloaded_executions_with_one_lease_of_its_own(
    replicas: Replica,
) -> None:
    """A replica renews one lease, its own, however many executions it owns (issue 18: it
    renewed every one of them every lease/3): past the leases the executions got when they
    started, a peer claims none of them, and they still run there."""
    a = await replicas("a")
    await a.create_workflow(load_workflow(APPROVE))
    ids = [(await a.start_execution("approve", {"i": i})).id for i in range(5)]
    await eventually(lambda: len(a.runs.idle) == 5)
    b = await replicas("b")
    await asyncio.sleep(LEASE * 2)
    now = a.clock()
    for execution_id in ids:
        record = await b.store.get_execution(execution_id)
        assert record is not None
        assert (record.owner, record.lease_epoch) == ("a", 1)
        assert record.lease_expires_at is not None and record.lease_expires_at < now
    assert not b.runs.live and not b.runs.idle
    assert all(i in a.runs.idle for i in ids)
    await a.signal(ids[2], "go", "yes")
    final = await a.wait(ids[2], timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": "yes"}}
