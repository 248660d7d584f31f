"""The scheduler shared by replicas on one PostgreSQL database: limits hold for the fleet,
priorities and tenant turns hold across replicas, buckets are shared, and the slots of a
replica that stopped renewing its lease come back; tenant quotas and concurrency keys of
executions hold across replicas too.

Three engines in this process, each with its own store (its own connection pools, its own
LISTEN connection), as three servers would have; the probe tool counts calls in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.admission import SharedAdmission
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

# Long enough that a replica's renewals keep up on a busy machine (three engines share this
# process's loop; with 1.5 s a stalled loop let a live replica's slots expire, and the fleet
# limit was exceeded by the slots a peer took back). The dead-replica test asks for a short one.
LEASE = 10.0
SHORT_LEASE = 1.5


@pytest.fixture
async def fleet(pg_server: PgServer):
    url = pg_server.create_database(migrated=True)
    probe = Probe()
    engines: list[Engine] = []
    stores: list[SqlStore] = []

    async def replica(name: str, lease: float = LEASE, **limits: Any) -> Engine:
        store = SqlStore(url)
        await store.open()
        engine = Engine(
            store,
            tools=Registry([*core_tools(), probe]),
            agents=default_agents(),
            config=EngineConfig(
                replica_id=name, lease_seconds=lease, seed=1, scheduler=SchedulerConfig(**limits)
            ),
        )
        await engine.start()
        assert isinstance(engine.admission, SharedAdmission)
        if SchedulerConfig(**limits).limits_nodes:
            assert isinstance(engine.scheduler, FleetScheduler)
        engines.append(engine)
        stores.append(store)
        return engine

    yield replica, probe
    for engine in engines:
        await engine.stop(grace=0)
    for store in stores:
        await store.close()
    pg_server.release(url)


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
    assert probe.order == [
        "blocker.n0",
        "low.n0",
        "low.n1",
        "high.n0",
        "high.n1",
        "low.n0",
        "low.n1",
    ]


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
    engines = [
        await replica(name, rate_limits={"api": BucketSpec(rate=10, per=1.0, burst=2)})
        for name in "abc"
    ]
    await engines[0].create_workflow(
        load_workflow(
            'name: rl\nnodes:\n  - id: m\n    rate_limit: api\n    map: {items: "${{ [1,2,3,4] }}",'
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
    a, b = [await replica(name, SHORT_LEASE, max_running_nodes=2) for name in "ab"]
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


# ---------------------------------------------------------------- executions (admission)
QUOTA_WF = """
name: held
nodes:
  - {id: work, tool: {name: test.probe, args: {wf: held, tag: "${{ input.tag }}", sleep: 0.01, gate: held}}}
"""


async def test_a_tenant_quota_holds_across_replicas(fleet) -> None:
    replica, probe = fleet
    engines = [await replica(name, max_running_executions_per_tenant=2) for name in "abc"]
    await engines[0].create_workflow(load_workflow(QUOTA_WF))
    ids = [
        (e, (await e.start_execution("held", {"tag": f"{e.replica_id}{i}"})).id)
        for i in range(4)
        for e in engines
    ]
    # Two run (their call held at the gate), the ten others wait PENDING on their replicas.
    await eventually(lambda: probe.running.get("all") == 2)
    await asyncio.sleep(0.5)
    states = [(await e.get_execution(i)).state for e, i in ids]
    assert states.count(ExecutionState.PENDING) == 10, states
    probe.gate("held").set()
    finals = [await e.wait(i, timeout=60) for e, i in ids]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    assert probe.peak["all"] == 2
    await eventually(lambda: _no_admissions(engines[0]))


async def _no_admissions(engine: Engine) -> bool:
    return not await engine.store.database.read(sa.select(db.admissions))


KEYED = """
name: {name}
concurrency: {{key: "${{{{ input.customer }}}}", limit: 1, on_limit: {on_limit}}}
nodes:
  - {{id: work, tool: {{name: test.probe, args: {{wf: "${{{{ input.customer }}}}", tag: "${{{{ input.tag }}}}", sleep: 0.01, gate: "${{{{ input.gate }}}}"}}}}}}
"""


async def test_a_concurrency_key_holds_across_replicas_first_come_first_served(fleet) -> None:
    replica, probe = fleet
    a, b, c = [await replica(name, max_running_nodes=100) for name in "abc"]
    await a.create_workflow(load_workflow(KEYED.format(name="keyed", on_limit="queue")))
    first = await a.start_execution("keyed", {"customer": "x", "tag": "x1", "gate": "x"})
    await eventually(lambda: probe.order == ["x1"])
    second = await b.start_execution("keyed", {"customer": "x", "tag": "x2", "gate": ""})
    third = await c.start_execution("keyed", {"customer": "x", "tag": "x3", "gate": ""})
    other = await c.start_execution("keyed", {"customer": "y", "tag": "y1", "gate": ""})
    assert (
        await c.wait(other.id, timeout=30)
    ).state is ExecutionState.SUCCEEDED  # another key goes
    assert (await b.get_execution(second.id)).state is ExecutionState.PENDING
    probe.gate("x").set()
    for engine, e in ((a, first), (b, second), (c, third)):
        assert (await engine.wait(e.id, timeout=30)).state is ExecutionState.SUCCEEDED
    assert probe.peak["workflow:x"] == 1
    assert [t for t in probe.order if t.startswith("x")] == ["x1", "x2", "x3"]


async def test_cancel_oldest_cancels_the_one_running_on_another_replica(fleet) -> None:
    replica, probe = fleet
    a, b = [await replica(name, max_running_nodes=100) for name in "ab"]
    await a.create_workflow(load_workflow(KEYED.format(name="keyed", on_limit="cancel_oldest")))
    old = await a.start_execution("keyed", {"customer": "z", "tag": "z1", "gate": "z"})
    await eventually(lambda: probe.order == ["z1"])
    new = await b.start_execution("keyed", {"customer": "z", "tag": "z2", "gate": ""})
    assert (await a.wait(old.id, timeout=30)).state is ExecutionState.CANCELLED
    assert (await b.wait(new.id, timeout=30)).state is ExecutionState.SUCCEEDED
    await a.create_workflow(load_workflow(KEYED.format(name="newest", on_limit="cancel_newest")))
    held = await a.start_execution("newest", {"customer": "n", "tag": "n1", "gate": "n"})
    await eventually(lambda: "n1" in probe.order)
    refused = await b.start_execution("newest", {"customer": "n", "tag": "n2", "gate": ""})
    assert refused.state is ExecutionState.CANCELLED
    probe.gate("n").set()
    assert (await a.wait(held.id, timeout=30)).state is ExecutionState.SUCCEEDED
