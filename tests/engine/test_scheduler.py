"""The scheduler: priorities, FIFO, tenant fairness, limits at each level, execution quotas,
concurrency keys, token buckets. Limits make nodes wait; nothing fails because of one."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.errors import ResourceExhausted
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.engine.scheduler import BucketSpec, SchedulerConfig, TokenBucket
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from tests.engine.conftest import eventually


class Probe(Tool):
    """Counts concurrent calls overall, per tenant and per workflow, and the start order."""

    name = "test.probe"
    effect = Effect.PURE

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[str] = []
        # A call with `gate: NAME` holds its slot until the test opens that gate.
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def _add(self, scope: str, delta: int) -> None:
        self.running[scope] = self.running.get(scope, 0) + delta
        self.peak[scope] = max(self.peak.get(scope, 0), self.running[scope])

    async def call(self, args: Any, ctx: CallContext) -> Any:
        scopes = ["all", f"tenant:{ctx.tenant}", f"workflow:{args.get('wf', '')}"]
        for scope in scopes:
            self._add(scope, 1)
        self.order.append(args.get("tag", ctx.node_id))
        try:
            if args.get("gate"):
                await self.gate(args["gate"]).wait()
            await asyncio.sleep(args.get("sleep", 0.005))
        finally:
            for scope in scopes:
                self._add(scope, -1)
        return {"tag": args.get("tag")}


async def make_engine(probe: Probe, **limits: Any) -> Engine:
    config = SchedulerConfig(**limits)
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), probe]),
        agents=default_agents(),
        config=EngineConfig(scheduler=config, seed=5),
    )
    await engine.start()
    return engine


def fan(
    name: str,
    width: int,
    *,
    sleep: float = 0.005,
    priority: int | None = None,
    extra: str = "",
    gate: str = "",
) -> str:
    nodes = "".join(
        f"  - {{id: n{i}, {'priority: ' + str(priority) + ', ' if priority is not None else ''}"
        f"tool: {{name: test.probe, args: {{wf: {name}, tag: '{name}.n{i}', sleep: {sleep}, gate: '{gate}'}}}}}}\n"
        for i in range(width)
    )
    return f"name: {name}\n{extra}nodes:\n{nodes}"


async def test_global_tenant_and_workflow_limits_hold_and_all_finish() -> None:
    probe = Probe()
    engine = await make_engine(
        probe, max_running_nodes=4, max_running_nodes_per_tenant=3, max_running_nodes_per_workflow=2
    )
    ids = []
    for tenant in ("acme", "globex"):
        for wf in ("wa", "wb"):
            await engine.create_workflow(load_workflow(fan(wf, 6)), tenant=tenant)
            for _ in range(2):
                ids.append((tenant, (await engine.start_execution(wf, {}, tenant=tenant)).id))
    finals = [await engine.wait(i, timeout=20) for _, i in ids]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    assert probe.peak["all"] == 4
    assert probe.peak["tenant:acme"] <= 3 and probe.peak["tenant:globex"] <= 3
    assert engine.scheduler.stats.limit_hits > 0
    assert engine.scheduler.stats.running == 0 and engine.scheduler.queue_depth == 0
    await engine.stop(grace=0)


async def test_priority_order_then_fifo() -> None:
    probe = Probe()
    engine = await make_engine(probe, max_running_nodes=1)
    await engine.create_workflow(load_workflow(fan("blocker", 1, gate="blocker")))
    await engine.create_workflow(load_workflow(fan("low", 2, priority=1)))
    await engine.create_workflow(load_workflow(fan("high", 2, priority=5)))
    blocker = await engine.start_execution("blocker", {})
    await eventually(lambda: probe.order == ["blocker.n0"])  # the blocker holds the only slot
    low = await engine.start_execution("low", {}, priority=0)
    high = await engine.start_execution("high", {}, priority=0)
    urgent = await engine.start_execution("low", {}, priority=9)
    await eventually(
        lambda: engine.scheduler.queue_depth == 6
    )  # every other node waits for the slot
    probe.gate("blocker").set()
    for e in (blocker, low, high, urgent):
        await engine.wait(e.id, timeout=10)
    # Execution priority first (urgent), then node priority (high), then FIFO (low, n0 before n1).
    assert probe.order == [
        "blocker.n0",
        "low.n0",
        "low.n1",
        "high.n0",
        "high.n1",
        "low.n0",
        "low.n1",
    ]
    await engine.stop(grace=0)


async def test_tenant_fairness_a_starved_tenant_gets_a_slot_soon() -> None:
    probe = Probe()
    engine = await make_engine(probe, max_running_nodes=1)
    await engine.create_workflow(
        load_workflow(fan("bulk", 60, sleep=0.001, gate="bulk")), tenant="big"
    )
    await engine.create_workflow(load_workflow(fan("one", 1, sleep=0.001)), tenant="small")
    bulk = await engine.start_execution("bulk", {}, tenant="big")
    # The first bulk node holds the only slot, the other 59 wait for it.
    await eventually(lambda: len(probe.order) == 1 and engine.scheduler.queue_depth == 59)
    position_when_ready = len(probe.order)
    one = await engine.start_execution("one", {}, tenant="small")
    await eventually(lambda: engine.scheduler.queue_depth == 60)
    probe.gate("bulk").set()
    await engine.wait(one.id, timeout=10)
    await engine.wait(bulk.id, timeout=10)
    started_after = probe.order.index("one.n0") - position_when_ready
    assert started_after <= 2 * 2  # within 2 x (number of tenants) slots
    await engine.stop(grace=0)


async def test_execution_quota_queues_starts_as_pending() -> None:
    probe = Probe()
    engine = await make_engine(
        probe, max_running_executions_per_tenant=2, max_pending_executions_per_tenant=3
    )
    # The first two hold their slots until the gate opens: three starts are left pending.
    await engine.create_workflow(load_workflow(fan("q", 1, sleep=0.05, gate="q")))
    started = [await engine.start_execution("q", {}) for _ in range(5)]
    await eventually(lambda: probe.running.get("all") == 2)
    states = [(await engine.get_execution(e.id)).state for e in started]
    assert states.count(ExecutionState.PENDING) == 3, states
    with pytest.raises(ResourceExhausted):
        await engine.start_execution("q", {})
    probe.gate("q").set()
    finals = [await engine.wait(e.id, timeout=10) for e in started]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    assert probe.peak["all"] <= 2
    # A queued start can be cancelled before it runs.
    blockers = [await engine.start_execution("q", {}) for _ in range(3)]
    cancelled = await engine.cancel(blockers[2].id)
    assert cancelled.state is ExecutionState.CANCELLED
    for b in blockers[:2]:
        await engine.wait(b.id, timeout=10)
    await engine.stop(grace=0)


CONCURRENCY = """
name: per-customer
concurrency: {{key: "${{{{ input.customer }}}}", limit: 1, on_limit: {on_limit}}}
nodes:
  - {{id: work, tool: {{name: test.probe, args: {{wf: per-customer, tag: "${{{{ input.tag }}}}", sleep: 0.05, gate: "${{{{ input.gate }}}}"}}}}}}
"""


async def test_concurrency_key_queue() -> None:
    probe = Probe()
    engine = await make_engine(probe)
    await engine.create_workflow(load_workflow(CONCURRENCY.format(on_limit="queue")))
    # a1 holds key a until its gate opens: a2 waits for it, b1 does not.
    a1 = await engine.start_execution("per-customer", {"customer": "a", "tag": "a1", "gate": "a"})
    a2 = await engine.start_execution("per-customer", {"customer": "a", "tag": "a2", "gate": ""})
    b1 = await engine.start_execution("per-customer", {"customer": "b", "tag": "b1", "gate": ""})
    assert (await engine.get_execution(a2.id)).state is ExecutionState.PENDING
    await eventually(lambda: "b1" in probe.order)
    probe.gate("a").set()
    finals = [await engine.wait(e.id, timeout=10) for e in (a1, a2, b1)]
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
    assert probe.order.index("a2") > probe.order.index("a1")
    assert probe.order.index("b1") < probe.order.index("a2")  # another key is not held back
    await engine.stop(grace=0)


async def test_concurrency_key_cancel_newest_and_oldest() -> None:
    probe = Probe()
    engine = await make_engine(probe)
    await engine.create_workflow(load_workflow(CONCURRENCY.format(on_limit="cancel_newest")))
    first = await engine.start_execution(
        "per-customer", {"customer": "a", "tag": "x1", "gate": "x"}
    )
    second = await engine.start_execution(
        "per-customer", {"customer": "a", "tag": "x2", "gate": ""}
    )
    assert second.state is ExecutionState.CANCELLED
    probe.gate("x").set()
    assert (await engine.wait(first.id, timeout=30)).state is ExecutionState.SUCCEEDED

    await engine.create_workflow(load_workflow(CONCURRENCY.format(on_limit="cancel_oldest")))
    old = await engine.start_execution("per-customer", {"customer": "a", "tag": "y1", "gate": "y"})
    await eventually(lambda: "y1" in probe.order)  # it runs, and holds the key until cancelled
    new = await engine.start_execution("per-customer", {"customer": "a", "tag": "y2", "gate": ""})
    assert (await engine.wait(old.id, timeout=30)).state is ExecutionState.CANCELLED
    assert (await engine.wait(new.id, timeout=30)).state is ExecutionState.SUCCEEDED
    await engine.stop(grace=0)


def test_token_bucket_rate_and_burst_over_ten_seconds() -> None:
    """Simulated clock: 10 s at 5 tokens/s with a burst of 3, asked every millisecond."""
    bucket = TokenBucket(BucketSpec(rate=5, per=1.0, burst=3), now=0.0)
    burst = 0
    while bucket.take(0.0):
        burst += 1
    assert burst == 3  # the burst, at once
    taken_at = [0.0] * 3 + [t / 1000 for t in range(1, 10_001) if bucket.take(t / 1000)]
    rate = (len(taken_at) - 3) / 10.0
    assert 4.5 <= rate <= 5.5  # within 10%
    gaps = [b - a for a, b in itertools.pairwise(taken_at[3:])]
    assert min(gaps) >= 0.198  # 200 ms apart, to the millisecond the clock was read at


async def test_rate_limited_nodes_wait_in_ready_and_never_fail() -> None:
    probe = Probe()
    engine = await make_engine(probe, rate_limits={"api": BucketSpec(rate=20, per=1.0, burst=2)})
    await engine.create_workflow(
        load_workflow(
            'name: rl\nnodes:\n  - id: m\n    rate_limit: api\n    map: {items: "${{ [1,2,3,4,5,6] }}",'
            " node: {tool: {name: test.probe, args: {sleep: 0}}}}\n"
        )
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ex = await engine.start_execution("rl", {})
    final = await engine.wait(ex.id, timeout=10)
    elapsed = loop.time() - t0
    assert final.state is ExecutionState.SUCCEEDED
    assert elapsed >= (6 - 2) / 20 * 0.9  # two from the burst, then 20/s
    events = await engine.list_events(ex.id)
    assert any(e.type == "node.running" and (e.data or {}).get("rate_limited") for e in events)
    assert engine.scheduler.stats.rate_limit_waits > 0
    await engine.stop(grace=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.fixed_dictionaries(
        {
            "max_running_nodes": st.integers(0, 4),
            "max_running_nodes_per_tenant": st.integers(0, 3),
            "max_running_nodes_per_workflow": st.integers(0, 3),
            "max_running_executions_per_tenant": st.integers(0, 3),
        }
    ),
    workload=st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3"]),
            st.sampled_from(["wa", "wb"]),
            st.integers(1, 4),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_property_no_limit_is_exceeded_and_everything_finishes(limits, workload) -> None:
    async def scenario() -> None:
        probe = Probe()
        engine = await make_engine(probe, **limits)
        created = set()
        ids = []
        for tenant, wf, width, priority in workload:
            if (tenant, wf) not in created:
                await engine.create_workflow(load_workflow(fan(wf, 4, sleep=0.002)), tenant=tenant)
                created.add((tenant, wf))
            ids.append((await engine.start_execution(wf, {}, tenant=tenant, priority=priority)).id)
        finals = [await engine.wait(i, timeout=30) for i in ids]
        assert all(f.state is ExecutionState.SUCCEEDED for f in finals)
        if limits["max_running_nodes"]:
            assert probe.peak["all"] <= limits["max_running_nodes"]
        for scope, peak in probe.peak.items():
            if scope.startswith("tenant:") and limits["max_running_nodes_per_tenant"]:
                assert peak <= limits["max_running_nodes_per_tenant"]
        quota = limits["max_running_executions_per_tenant"]
        if quota:
            # From the event log: executions running at once per tenant.
            spans = []
            for (tenant, _, _, _), execution_id in zip(workload, ids):
                events = await engine.list_events(execution_id, tenant=tenant)
                start = next(e.time for e in events if e.type == "execution.running")
                spans.append((tenant, start, events[-1].time))
            for tenant in ("t1", "t2", "t3"):
                points = sorted(
                    [(s, 1) for t, s, _ in spans if t == tenant]
                    + [(e, -1) for t, _, e in spans if t == tenant],
                    key=lambda p: (p[0], p[1]),
                )
                running = peak = 0
                for _, delta in points:
                    running += delta
                    peak = max(peak, running)
                assert peak <= quota
        assert engine.scheduler.stats.running == 0
        await engine.stop(grace=0)

    asyncio.run(scenario())
