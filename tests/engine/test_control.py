"""Pause, resume, cancel, signals, watch and recovery from the store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, IllegalTransition, load_workflow
from agentrun.engine.errors import AlreadyExists, ExecutionNotFound, InvalidArgument, InvalidInput
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState
from tests.engine.conftest import eventually


class Ledger(Tool):
    """Records every call, so tests can count how often each step really ran."""

    name = "test.ledger"
    effect = Effect.IDEMPOTENT

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await asyncio.sleep((args or {}).get("sleep", 0))
        self.calls.append((ctx.execution_id, ctx.node_id, ctx.attempt))
        return {"node": ctx.node_id}


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def extra_tools(ledger):
    return [ledger]


CHAIN = """
name: chain
nodes:
  - {id: s1, retry: {max_attempts: 3, initial_interval: 1ms}, tool: {name: test.ledger, args: {sleep: 0.03}}}
  - {id: s2, needs: [s1], retry: {max_attempts: 3, initial_interval: 1ms}, tool: {name: test.ledger, args: {sleep: 0.03}}}
  - {id: s3, needs: [s2], retry: {max_attempts: 3, initial_interval: 1ms}, tool: {name: test.ledger, args: {sleep: 0.03}}}
  - {id: s4, needs: [s3], retry: {max_attempts: 3, initial_interval: 1ms}, tool: {name: test.ledger, args: {sleep: 0.03}}}
"""


async def test_pause_stops_new_nodes_and_resume_continues(harness, ledger) -> None:
    ex = await harness.start(CHAIN)
    await eventually(lambda: len(ledger.calls) >= 1)
    paused = await harness.engine.pause(ex.id)
    assert paused.state is ExecutionState.PAUSED
    count = len(ledger.calls)
    await asyncio.sleep(0.15)
    # The node running at pause time may finish; nothing new starts.
    assert len(ledger.calls) <= count + 1
    events = await harness.events(ex.id)
    paused_at = next(e.sequence for e in events if e.type == "execution.paused")
    assert not [e for e in events if e.type == "node.running" and e.sequence > paused_at]
    with pytest.raises(IllegalTransition) as info:
        await harness.engine.pause(ex.id)
    assert info.value.current_state == "PAUSED"
    resumed = await harness.engine.resume(ex.id)
    assert resumed.state is ExecutionState.RUNNING
    final = await harness.engine.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert sorted(n for _, n, _ in ledger.calls) == ["s1", "s2", "s3", "s4"]


async def test_resume_of_a_running_execution_is_illegal(harness) -> None:
    ex = await harness.start(CHAIN)
    with pytest.raises(IllegalTransition) as info:
        await harness.engine.resume(ex.id)
    assert info.value.current_state in ("PENDING", "RUNNING")
    await harness.engine.wait(ex.id, timeout=30)


async def test_cancel_cancels_running_calls(harness, ledger) -> None:
    ex = await harness.start(CHAIN)
    await eventually(lambda: len(ledger.calls) >= 1)
    cancelled = await harness.engine.cancel(ex.id)
    assert cancelled.state is ExecutionState.CANCELLED
    nodes = {n.node_id: n for n in await harness.engine.get_nodes(ex.id)}
    assert nodes["s2"].state is NodeState.CANCELLED
    await asyncio.sleep(0.1)
    assert "s3" not in [n for _, n, _ in ledger.calls]
    with pytest.raises(IllegalTransition):
        await harness.engine.cancel(ex.id)
    with pytest.raises(IllegalTransition):
        await harness.engine.signal(ex.id, "x", {})


async def test_request_id_is_idempotent(harness) -> None:
    spec = load_workflow("name: r\nnodes:\n  - {id: a, pass: {value: 1}}\n")
    await harness.engine.create_workflow(spec)
    first = await harness.engine.start_execution("r", {"a": 1}, request_id="req-1")
    again = await harness.engine.start_execution("r", {"a": 1}, request_id="req-1")
    assert again.id == first.id
    with pytest.raises(AlreadyExists):
        await harness.engine.start_execution("r", {"a": 2}, request_id="req-1")
    assert len(await harness.engine.list_executions()) == 1


async def test_input_schema_violations_name_the_field(harness) -> None:
    spec = load_workflow(
        "name: r\ninput_schema: {type: object, required: [message], properties: {n: {type: integer}}}\n"
        "nodes:\n  - {id: a, pass: {value: 1}}\n"
    )
    await harness.engine.create_workflow(spec)
    with pytest.raises(InvalidInput) as info:
        await harness.engine.start_execution("r", {"n": "x"})
    paths = sorted(d.path for d in info.value.diagnostics)
    assert paths == ["input", "input.n"]


async def test_tenants_do_not_see_each_other(harness) -> None:
    spec = load_workflow("name: r\nnodes:\n  - {id: a, pass: {value: 1}}\n")
    await harness.engine.create_workflow(spec, tenant="acme")
    ex = await harness.engine.start_execution("r", {}, tenant="acme")
    with pytest.raises(ExecutionNotFound):
        await harness.engine.get_execution(ex.id, tenant="other")
    assert await harness.engine.list_executions(tenant="other") == []


async def test_signal_id_applies_once(harness) -> None:
    ex = await harness.start(
        "name: w\nnodes:\n  - {id: a, wait: {signal: go}}\n  - {id: b, needs: [a], wait: {signal: go}}\n"
    )
    await harness.engine.signal(ex.id, "go", 1, signal_id="sig-1")
    await harness.engine.signal(ex.id, "go", 1, signal_id="sig-1")

    async def b_waits() -> bool:
        nodes = {n.node_id: n.state for n in await harness.engine.get_nodes(ex.id)}
        return nodes.get("a") is NodeState.SUCCEEDED and nodes.get("b") is NodeState.WAITING

    await eventually(b_waits)  # the repeat was not taken for b's signal (the output says so too)
    assert (await harness.engine.get_execution(ex.id)).state is ExecutionState.WAITING
    await harness.engine.signal(ex.id, "go", 2, signal_id="sig-2")
    final = await harness.engine.wait(ex.id, timeout=30)
    assert final.output == {"b": 2}


async def test_watch_streams_backlog_then_live_and_resumes(harness) -> None:
    ex = await harness.start(CHAIN)
    seen = []
    async for event in harness.engine.watch(ex.id):
        seen.append(event)
        if len(seen) == 5:
            break
    resumed = [e async for e in harness.engine.watch(ex.id, after_sequence=seen[-1].sequence)]
    sequences = [e.sequence for e in seen + resumed]
    assert sequences == list(range(1, len(sequences) + 1))
    assert resumed[-1].type == "execution.succeeded"
    stored = await harness.events(ex.id)
    assert [e.sequence for e in stored] == sequences


async def test_slow_watcher_does_not_buffer_without_bound(harness) -> None:
    from agentrun.engine import hub

    items = list(range(3000))
    ex = await harness.start(
        'name: many\nnodes:\n  - {id: m, map: {items: "${{ input.xs }}", node: {tool: {name: core.echo}}}}\n'.replace(
            "${{ input.xs }}", "${{ input.xs }}"
        ),
        {"xs": items},
    )
    watcher = harness.engine.watch(ex.id)
    first = await watcher.__anext__()
    await harness.engine.wait(ex.id, timeout=20)
    subs = harness.engine.hub._subs.get(ex.id, [])
    assert all(len(s.buffer) <= hub.BUFFER for s in subs)
    rest = [e async for e in watcher]
    sequences = [first.sequence] + [e.sequence for e in rest]
    assert sequences == list(range(1, len(sequences) + 1))
    assert rest[-1].type == "execution.succeeded"


async def test_restart_resumes_from_the_store_without_rerunning(ledger) -> None:
    store = MemoryStore()

    def make() -> Engine:
        return Engine(
            store,
            tools=Registry([*core_tools(), ledger]),
            agents=default_agents(),
            config=EngineConfig(seed=1),
        )

    first = make()
    await first.start()
    await first.create_workflow(load_workflow(CHAIN))
    ex = await first.start_execution("chain", {})
    await eventually(lambda: len(ledger.calls) >= 2)
    # Hand everything back mid-run, as a crash would (no grace).
    await first.stop(grace=0)
    done_before = {
        n.node_id for n in await store.get_nodes(ex.id) if n.state is NodeState.SUCCEEDED
    }
    assert done_before

    second = make()
    await second.start()
    final = await second.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    runs = [n for e, n, _ in ledger.calls if e == ex.id]
    for node in done_before:
        assert runs.count(node) == 1, f"{node} ran again after the restart"
    assert sorted(set(runs)) == ["s1", "s2", "s3", "s4"]
    events = await store.list_events(ex.id, limit=10_000)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


async def test_restart_keeps_waits_and_buffered_signals() -> None:
    store = MemoryStore()

    def make() -> Engine:
        return Engine(store, tools=Registry(core_tools()), agents=default_agents())

    first = make()
    await first.start()
    await first.create_workflow(
        load_workflow(
            "name: w\nnodes:\n  - {id: a, wait: {signal: go}}\n  - {id: nap, needs: [a], wait: {duration: 50ms}}\n"
        )
    )
    ex = await first.start_execution("w", {})

    async def waiting() -> bool:  # the run itself may be out of memory while it waits
        record = await store.get_execution(ex.id)
        return record is not None and record.state is ExecutionState.WAITING

    await eventually(waiting)
    await first.stop(grace=0)
    await store.add_signal(
        __import__("agentrun.storage.records", fromlist=["SignalRecord"]).SignalRecord(
            execution_id=ex.id, name="go", data={"v": 1}, signal_id="s", created_at=0.0
        )
    )
    second = make()
    await second.start()
    final = await second.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"nap": None}


async def test_rerun_from_the_failed_node_reuses_earlier_outputs(harness, ledger) -> None:
    text = """
name: rr
nodes:
  - {id: s1, tool: {name: test.ledger, args: {}}, export: {first: "${{ output.node }}"}}
  - {id: side, tool: {name: test.ledger, args: {}}}
  - id: flaky
    needs: [s1]
    tool: {name: core.fail, args: {succeed_on_attempt: "${{ input.ok_on }}"}}
  - {id: s3, needs: [flaky, side], tool: {name: test.ledger, args: {}}}
"""
    first, _ = await harness.run(text, {"ok_on": 99})
    assert first.state is ExecutionState.FAILED and first.error["node"] == "flaky"
    before = len(ledger.calls)
    again = await harness.engine.rerun(first.id, input={"ok_on": 1})
    final = await harness.engine.wait(again.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.labels["rerun_of"] == first.id
    assert final.vars == {"first": "s1"}
    new_calls = [n for e, n, _ in ledger.calls[before:] if e == again.id]
    assert new_calls == ["s3"]  # s1 and side kept their outputs
    nodes = {n.node_id: n for n in await harness.engine.get_nodes(again.id)}
    assert nodes["s1"].output == {"node": "s1"} and nodes["flaky"].output == {"attempt": 1}


async def test_rerun_from_a_chosen_node_and_illegal_rerun(harness, ledger) -> None:
    ex = await harness.start(CHAIN)
    with pytest.raises(IllegalTransition):
        await harness.engine.rerun(ex.id)
    await harness.engine.wait(ex.id, timeout=30)
    before = len(ledger.calls)
    again = await harness.engine.rerun(ex.id, from_node="s3")
    await harness.engine.wait(again.id, timeout=30)
    assert [n for _, n, _ in ledger.calls[before:]] == ["s3", "s4"]
    with pytest.raises(InvalidArgument) as refused:
        await harness.engine.rerun(ex.id, from_node="nope")
    assert refused.value.diagnostics[0].path == "from_node_id"
