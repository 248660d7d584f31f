"""The scheduler shared by replicas on one PostgreSQL database: limits hold for the fleet,
priorities and tenant turns hold across replicas, buckets are shared, and the slots of a
replica that stopped renewing its lease come back.

Three engines in this process, each with its own store (its own connection pools, its own
LISTEN connection), as three servers would have; the probe tool counts calls in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.fleet import FleetScheduler
from agentrun.engine.scheduler import BucketSpec, SchedulerConfig
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage import schema as db
from agentrun.storage.records import ExecutionState
from agentrun.storage.sql import SqlStore
from tests.engine.conftest import eventually
from tests.engine.test_scheduler import Probe, fan
from tests.storage import conftest as storage_fixtures
from tests.storage.conftest import PgServer

# Throwaway databases on the shared PostgreSQL server (a session fixture).
pg_server = storage_fixtures.pg_server

pytestmark = pytest.mark.timeout(180)

LEASE = 1.5


@pytest.fixture
async def fleet(pg_server: PgServer):
    url = pg_server.create_database()
    probe = Probe()
    engines: list[Engine] = []
    stores: list[SqlStore] = []

    async def replica(name: str, **limits: Any) -> Engine:
        store = SqlStore(url)
        await store.open()
        engine = Engine(
            store,
            tools=Registry([*core_tools(), probe]),
            agents=default_agents(),
            config=EngineConfig(
                replica_id=name, lease_seconds=LEASE, seed=1, scheduler=SchedulerConfig(**limits)
            ),
        )
        await engine.start()
        assert isinstance(engine.scheduler, FleetScheduler)
        engines.append(engine)
        stores.append(store)
        return engine

    yield replica, probe
    for engine in engines:
        await engine.stop(grace=0)
    for store in stores:
        await store.close()


async def slot_rows(engine: Engine) -> list[Any]:
    return await engine.store.database.read(sa.select(db.slot_tickets))


async def test_three_replicas_never_exceed_the_fleet_limit(fleet) -> None:
    replica, probe = fleet
    engines = [await replica(name, max_running_per_target={"test.probe": 5}) for name in "abc"]
    await engines[0].create_workflow(load_workflow(fan("w", 2, sleep=0.01, gate="w")))
    ids = [
        (engine, (await engine.start_execution("w", {})).id)
        for _ in range(34)
        for engine in engines
    ]
    # The calls granted hold their slots at the gate: the fleet fills 5, where each replica
    # alone would fill 5 of its own.
    await eventually(lambda: probe.running.get("all") == 5)
    await eventually(lambda: sum(e.scheduler.queue_depth for e in engines) == 34 * 3 * 2 - 5)
    await asyncio.sleep(0.5)
    assert probe.running["all"] == 5
    probe.gate("w").set()
    finals = [await engine.wait(i, timeout=120) for engine, i in ids]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    assert probe.peak["all"] == 5
    assert all(engine.scheduler.stats.granted > 0 for engine in engines)
    await eventually(lambda: all(e.scheduler.stats.running == 0 for e in engines))
    await eventually(lambda: _empty(engines[0]))


async def _empty(engine: Engine) -> bool:
    return not await slot_rows(engine)


async def test_priority_and_fifo_across_replicas(fleet) -> None:
    replica, probe = fleet
    a, b, c = [await replica(name, max_running_nodes=1) for name in "abc"]
    await a.create_workflow(load_workflow(fan("blocker", 1, gate="blocker")))
    await a.create_workflow(load_workflow(fan("low", 2, priority=1)))
    await a.create_workflow(load_workflow(fan("high", 2, priority=5)))
    blocker = await a.start_execution("blocker", {})
    await eventually(lambda: probe.order == ["blocker.n0"])
    low = await b.start_execution("low", {}, priority=0)
    await eventually(lambda: b.scheduler.queue_depth == 2)
    high = await c.start_execution("high", {}, priority=0)
    await eventually(lambda: c.scheduler.queue_depth == 2)
    urgent = await c.start_execution("low", {}, priority=9)
    await eventually(lambda: c.scheduler.queue_depth == 4)
    await eventually(lambda: _count(a, 7))  # every waiting row is in the database
    probe.gate("blocker").set()
    for engine, e in ((a, blocker), (b, low), (c, high), (c, urgent)):
        await engine.wait(e.id, timeout=30)
    # Execution priority first (urgent, on c), then node priority (high, on c), then
    # arrival (low on b: n0 before n1), whichever replica the call waits on.
    assert probe.order == ["blocker.n0", "low.n0", "low.n1", "high.n0", "high.n1", "low.n0", "low.n1"]


async def _count(engine: Engine, n: int) -> bool:
    return len(await slot_rows(engine)) == n


async def test_tenants_take_turns_across_replicas(fleet) -> None:
    replica, probe = fleet
    a, b = [await replica(name, max_running_nodes=1) for name in "ab"]
    await a.create_workflow(load_workflow(fan("bulk", 30, sleep=0.001, gate="bulk")), tenant="big")
    await a.create_workflow(load_workflow(fan("one", 1, sleep=0.001)), tenant="small")
    bulk = await a.start_execution("bulk", {}, tenant="big")
    await eventually(lambda: len(probe.order) == 1 and a.scheduler.queue_depth == 29)
    one = await b.start_execution("one", {}, tenant="small")
    await eventually(lambda: b.scheduler.queue_depth == 1)
    await eventually(lambda: _count(a, 31))
    probe.gate("bulk").set()
    await b.wait(one.id, timeout=30)
    await a.wait(bulk.id, timeout=30)
    # The small tenant's call, waiting on another replica, went within one turn of each tenant.
    assert probe.order.index("one.n0") <= 2


async def test_a_bucket_is_shared_by_the_replicas(fleet) -> None:
    replica, _ = fleet
    engines = [await replica(name, rate_limits={"api": BucketSpec(rate=10, per=1.0, burst=2)}) for name in "abc"]
    await engines[0].create_workflow(
        load_workflow(
            "name: rl\nnodes:\n  - id: m\n    rate_limit: api\n    map: {items: \"${{ [1,2,3,4] }}\","
            " node: {tool: {name: test.probe, args: {sleep: 0}}}}\n"
        )
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ids = [(e, (await e.start_execution("rl", {})).id) for e in engines]
    finals = [await e.wait(i, timeout=60) for e, i in ids]
    elapsed = loop.time() - t0
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    # 12 calls at 10/s with a burst of 2, however many replicas ask: at least a second.
    assert elapsed >= (12 - 2) / 10 * 0.9
    assert sum(e.scheduler.stats.rate_limit_waits for e in engines) > 0


async def test_a_dead_replicas_slots_come_back(fleet) -> None:
    replica, probe = fleet
    a, b = [await replica(name, max_running_nodes=2) for name in "ab"]
    await a.create_workflow(load_workflow(fan("held", 2, gate="never")))
    await a.create_workflow(load_workflow(fan("next", 3, sleep=0.001)))
    await a.start_execution("held", {})
    await eventually(lambda: probe.running.get("all") == 2)
    waiting = await b.start_execution("next", {})
    await eventually(lambda: b.scheduler.queue_depth == 3)
    # a dies as kill -9 leaves it: nothing more reaches the database, its rows stay.
    scheduler = a.scheduler
    assert isinstance(scheduler, FleetScheduler)
    scheduler._closed = True
    scheduler._renewer.cancel()
    a.draining = True
    a._maintenance.cancel()
    for run in list(a._runs.values()):
        run.task.cancel()
    assert (await b.wait(waiting.id, timeout=60)).state is ExecutionState.SUCCEEDED
    assert probe.peak["all"] <= 4  # a's two calls (still running here) and b's two
