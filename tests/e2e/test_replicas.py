"""Several replicas on one PostgreSQL: leases, take-over, fencing, and requests that land on
a replica other than the one running the execution."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.records import ExecutionState, NodeState
from agentrun.storage.sql import SqlStore
from tests.storage.conftest import PgServer

LEASE = 0.6


class Ledger(Tool):
    name = "test.step"
    effect = Effect.IDEMPOTENT

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        # A first attempt with `hold` returns only once this is set (the test saw the take-over).
        self.hold = asyncio.Event()

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await asyncio.sleep(args.get("sleep", 0.05))
        if args.get("hold") and ctx.attempt == 1:
            await asyncio.wait_for(self.hold.wait(), 20)
        self.calls.append((ctx.execution_id, ctx.node_id, ctx.attempt, args.get("replica", "")))
        return {"node": ctx.node_id}


@pytest.fixture(scope="module")
def pg() -> Any:
    server = PgServer()
    yield server
    server.drop_all()


@pytest.fixture
async def cluster(pg):
    url = pg.create_database(migrated=True)
    ledger = Ledger()
    engines: list[Engine] = []
    stores: list[SqlStore] = []

    async def replica(name: str) -> Engine:
        store = SqlStore(url)
        await store.open()
        engine = Engine(
            store,
            tools=Registry([*core_tools(), ledger]),
            agents=default_agents(),
            config=EngineConfig(replica_id=name, lease_seconds=LEASE, seed=1),
        )
        await engine.start()
        engines.append(engine)
        stores.append(store)
        return engine

    yield replica, ledger
    for engine in engines:
        await engine.stop(grace=0)
    for store in stores:
        await store.close()
    pg.release(url)


def crash(engine: Engine) -> None:
    """As a kill -9 would leave it: runs gone, leases still held until they expire."""
    engine.draining = True
    engine._maintenance.cancel()
    for run in list(engine._runs.values()):
        run.task.cancel()


STEPS = "name: steps\nnodes:\n" + "".join(
    f"  - {{id: s{i}, {'needs: [s' + str(i - 1) + '], ' if i else ''}retry: {{max_attempts: 5, initial_interval: 1ms}}, "
    f"tool: {{name: test.step, args: {{sleep: 0.08}}}}}}\n"
    for i in range(6)
)


async def test_orphans_are_taken_over_and_committed_steps_never_rerun(cluster) -> None:
    replica, ledger = cluster
    a = await replica("a")
    b = await replica("b")
    await a.create_workflow(load_workflow(STEPS))
    ids = [(await a.start_execution("steps", {})).id for _ in range(4)]
    while len(ledger.calls) < 6:
        await asyncio.sleep(0.01)
    crash(a)
    await asyncio.sleep(0.05)
    committed = set()
    for execution_id in ids:
        for n in await b.store.get_nodes(execution_id):
            if n.state is NodeState.SUCCEEDED:
                committed.add((execution_id, n.node_id))
    assert committed
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    finals = [await b.wait(i, timeout=20) for i in ids]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    runs = [(e, n) for e, n, _, _ in ledger.calls]
    for key in committed:
        assert runs.count(key) == 1, f"{key} ran again"
    assert {(e, f"s{i}") for e in ids for i in range(6)} <= set(runs)
    for execution_id in ids:
        record = await b.store.get_execution(execution_id)
        assert record.owner == "b" and record.lease_epoch == 2
        events = await b.store.list_events(execution_id, limit=10_000)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert loop.time() - t0 < 20


async def test_a_zombie_replica_cannot_commit_after_losing_its_lease(cluster) -> None:
    replica, ledger = cluster
    a = await replica("a")
    await a.create_workflow(
        load_workflow(
            "name: slow\nnodes:\n  - {id: s, retry: {max_attempts: 3, initial_interval: 1ms},"
            " tool: {name: test.step, args: {sleep: 1.5, replica: a, hold: true}}}\n"
        )
    )
    ex = await a.start_execution("slow", {})
    while not [n for n in await a.store.get_nodes(ex.id) if n.state is NodeState.RUNNING]:
        await asyncio.sleep(0.01)
    a._maintenance.cancel()  # a stops renewing, as if SIGSTOPped
    await asyncio.sleep(LEASE + 0.1)
    b = await replica("b")  # claims the expired lease at once
    # a's call returns only after b's claim is stored, however slow b's start (a loaded
    # machine took b longer than a's 1.5 s call, and a, whose lease nobody had claimed yet,
    # committed the end itself).
    while (await b.store.get_execution(ex.id)).owner != "b":
        await asyncio.sleep(0.01)
    ledger.hold.set()
    final = await b.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    await asyncio.sleep(0.5)  # a's call finishes now and tries to commit
    record = await b.store.get_execution(ex.id)
    assert record.owner == "b" and record.lease_epoch == 2
    nodes = {n.node_id: n for n in await b.store.get_nodes(ex.id)}
    assert nodes["s"].attempt == 2  # b's attempt is the one recorded
    events = await b.store.list_events(ex.id, limit=1000)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert ex.id not in a._runs  # a stopped the run when its commit was refused


async def test_watch_signal_and_control_through_another_replica(cluster) -> None:
    replica, _ = cluster
    a = await replica("a")
    b = await replica("b")
    await a.create_workflow(
        load_workflow(
            "name: gate\nnodes:\n  - {id: wait, wait: {signal: go}}\n"
            "  - {id: after, needs: [wait], tool: {name: test.step, args: {sleep: 0.3}}}\n"
            "  - {id: last, needs: [after], tool: {name: test.step, args: {sleep: 0.01}}}\n"
        )
    )
    ex = await a.start_execution("gate", {})
    seen: list[Any] = []

    async def watch() -> None:
        async for event in b.watch(ex.id):
            seen.append(event)

    watcher = asyncio.create_task(watch())
    while (await b.get_execution(ex.id)).state is not ExecutionState.WAITING:
        await asyncio.sleep(0.02)
    await b.signal(ex.id, "go", {"ok": True})  # stored by b, applied by a
    while (await b.get_execution(ex.id)).state is not ExecutionState.RUNNING:
        await asyncio.sleep(0.02)
    paused = await b.pause(ex.id)
    assert paused.state is ExecutionState.PAUSED
    resumed = await b.resume(ex.id)
    assert resumed.state is not ExecutionState.PAUSED
    final = await b.wait(ex.id, timeout=10)
    await asyncio.wait_for(watcher, 5)
    assert final.state is ExecutionState.SUCCEEDED
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].type == "execution.succeeded"
    assert "execution.paused" in [e.type for e in seen]


async def test_the_same_request_id_on_several_replicas_starts_once(cluster) -> None:
    replica, _ = cluster
    engines = [await replica(name) for name in ("a", "b", "c")]
    await engines[0].create_workflow(
        load_workflow("name: once\nnodes:\n  - {id: a, pass: {value: 1}}\n")
    )
    calls = [
        engines[i % 3].start_execution("once", {"k": i % 10}, request_id=f"req-{i % 10}")
        for i in range(300)
    ]
    results = await asyncio.gather(*calls)
    assert len({r.id for r in results}) == 10
    assert len(await engines[0].list_executions(limit=1000)) == 10
