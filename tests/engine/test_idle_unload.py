"""Executions that only wait leave memory (issue 18): their run is rebuilt from the store when
a signal, a control request, a waiter or a wait timer needs it; what they do is unchanged."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.dag import DagRun
from agentrun.engine.dag import runs as runs_module
from agentrun.engine.dag import wakeups as wakeups_module
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from tests.engine.conftest import eventually

APPROVE = """
name: approve
nodes:
  - {id: ask, wait: {signal: go}}
  - {id: after, needs: [ask], tool: {name: core.echo, args: {got: "${{ nodes.ask.output }}"}}}
"""

NAP = """
name: nap
nodes:
  - {id: ask, wait: {signal: go}}
  - {id: sleep, needs: [ask], wait: {duration: 300ms}}
"""


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(seed=1),
    )
    await engine.start()
    await engine.create_workflow(load_workflow(APPROVE))
    await engine.create_workflow(load_workflow(NAP))
    yield engine
    await engine.stop(grace=0)


async def unloaded(engine: Engine, execution_id: str) -> None:
    await eventually(lambda: execution_id in engine.runs.idle)
    assert engine.runs.get(execution_id) is None
    assert execution_id in engine.runs  # still runs here


def live_dag_runs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, DagRun))


async def test_a_waiting_execution_leaves_memory_and_a_signal_brings_it_back(
    engine: Engine,
) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    assert (await engine.get_execution(ex.id)).state is ExecutionState.WAITING
    await engine.signal(ex.id, "go", {"ok": 1})
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": {"ok": 1}}}
    assert ex.id not in engine.runs
    types = [e.type for e in await engine.list_events(ex.id)]
    # Reloading wrote nothing of its own: one WAITING, then the signal's effects.
    assert types.count("execution.waiting") == 1
    assert types.count("signal.received") == 1


async def test_memory_holds_no_run_for_waiting_executions(engine: Engine) -> None:
    ids = [(await engine.start_execution("approve", {"i": i})).id for i in range(200)]
    await eventually(lambda: len(engine.runs.idle) == 200)
    assert not engine.runs.live
    assert live_dag_runs() == 0
    for execution_id in ids[:5]:
        await engine.signal(execution_id, "go", 1)
    for execution_id in ids[:5]:
        assert (await engine.wait(execution_id, timeout=10)).state is ExecutionState.SUCCEEDED
    assert len(engine.runs.idle) == 195
    assert live_dag_runs() == 0


async def test_a_wait_timer_wakes_an_unloaded_execution(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "UNLOAD_MIN_SECONDS", 0.05)
    monkeypatch.setattr(wakeups_module, "WAKE_AHEAD_SECONDS", 0.01)
    ex = await engine.start_execution("nap", {})
    await unloaded(engine, ex.id)
    await engine.signal(ex.id, "go")
    # The signal loads it; it then waits 300ms on a timer, out of memory again.
    await eventually(lambda: ex.id in engine.runs.idle and engine.runs.idle[ex.id] != float("inf"))
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    assert nodes["sleep"].ended_at is not None and nodes["sleep"].started_at is not None
    assert nodes["sleep"].ended_at - nodes["sleep"].started_at >= 0.3


async def test_a_short_timer_keeps_the_run_in_memory(engine: Engine) -> None:
    ex = await engine.start_execution("nap", {})
    await unloaded(engine, ex.id)
    await engine.signal(ex.id, "go")
    # 300ms is closer than UNLOAD_MIN_SECONDS: it stays loaded until it ends.
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED


async def test_pause_resume_and_cancel_of_an_unloaded_execution(engine: Engine) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    paused = await engine.pause(ex.id)
    assert paused.state is ExecutionState.PAUSED
    assert engine.runs.get(ex.id) is not None  # a paused run stays in memory
    resumed = await engine.resume(ex.id)
    assert resumed.state is not ExecutionState.PAUSED
    await unloaded(engine, ex.id)
    cancelled = await engine.cancel(ex.id)
    assert cancelled.state is ExecutionState.CANCELLED
    nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    assert nodes["ask"].state.value == "CANCELLED"
    await eventually(lambda: ex.id not in engine.runs)


async def test_a_watch_of_an_unloaded_execution_sees_it_through(engine: Engine) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    seen: list[str] = []

    async def watch() -> None:
        async for event in engine.watch(ex.id):
            seen.append(event.type)

    watcher = asyncio.create_task(watch())
    await eventually(lambda: "node.waiting" in seen)
    await engine.signal(ex.id, "go", 2)
    await asyncio.wait_for(watcher, 10)
    assert seen[-1] == "execution.succeeded"
    assert "signal.received" in seen


async def test_waiters_of_an_unloaded_execution_are_answered(engine: Engine) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    waiters = [asyncio.create_task(engine.wait(ex.id, timeout=10)) for _ in range(3)]
    await asyncio.sleep(0.05)
    await engine.signal(ex.id, "go")
    for final in await asyncio.gather(*waiters):
        assert final.state is ExecutionState.SUCCEEDED


async def test_signals_at_once_to_an_unloaded_execution_apply_once_each(engine: Engine) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    await asyncio.gather(*(engine.signal(ex.id, "go", i, signal_id=f"s{i}") for i in range(5)))
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    events = await engine.list_events(ex.id)
    answers = [e for e in events if e.type == "signal.received" and "wait_id" in (e.data or {})]
    assert len(answers) == 1  # the wait took one of them, once
    assert final.output == {"after": {"got": answers[0].data["data"]}}


async def test_without_unloading_the_run_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(unload_idle=False),
    )
    await engine.start()
    try:
        await engine.create_workflow(load_workflow(APPROVE))
        ex = await engine.start_execution("approve", {})
        await eventually(
            lambda: (
                (run := engine.runs.get(ex.id)) is not None
                and run.record.state is ExecutionState.WAITING
            )
        )
        assert not engine.runs.idle
    finally:
        await engine.stop(grace=0)


async def test_a_stopped_engine_hands_back_unloaded_executions() -> None:
    store = MemoryStore()

    def make() -> Engine:
        return Engine(store, tools=Registry(core_tools()), agents=default_agents())

    first = make()
    await first.start()
    await first.create_workflow(load_workflow(APPROVE))
    ex = await first.start_execution("approve", {})
    await unloaded(first, ex.id)
    await first.stop(grace=0)
    held = await store.get_execution(ex.id)
    assert held is not None and (held.lease_expires_at or 0) <= first.clock()  # handed back
    second = make()
    await second.start()
    try:
        await unloaded(second, ex.id)  # resumed, then out of memory again
        await second.signal(ex.id, "go", 3)
        final = await second.wait(ex.id, timeout=10)
        assert final.state is ExecutionState.SUCCEEDED
        assert final.output == {"after": {"got": 3}}
    finally:
        await second.stop(grace=0)


async def test_a_control_request_stored_for_an_unloaded_execution_is_applied_on_load() -> None:
    """Another replica relays pause/cancel as a stored signal; the owner's reload (or a
    restart) applies it once, as a run in memory would."""
    from agentrun.engine.dag import CONTROL_SIGNAL
    from agentrun.storage.records import SignalRecord

    store = MemoryStore()
    engine = Engine(store, tools=Registry(core_tools()), agents=default_agents())
    await engine.start()
    try:
        await engine.create_workflow(load_workflow(APPROVE))
        ex = await engine.start_execution("approve", {})
        await unloaded(engine, ex.id)
        await store.add_signal(
            SignalRecord(
                execution_id=ex.id,
                name=CONTROL_SIGNAL,
                data={"action": "cancel", "compensate": False, "override": None},
                signal_id="relayed",
                created_at=engine.clock(),
            )
        )
        await engine.runs.deliver_signals(ex.id)  # what the notification does
        final = await engine.wait(ex.id, timeout=10)
        assert final.state is ExecutionState.CANCELLED
        assert not await store.pending_signals(ex.id)  # consumed once
    finally:
        await engine.stop(grace=0)


async def test_a_signal_for_a_later_wait_is_recorded_when_it_arrives(engine: Engine) -> None:
    """A signal no wait takes yet is buffered, and its arrival is an event at once (what the
    console shows after "sent"), also when it wakes an unloaded run: the load read the new
    signal with the others and buffered it silently (found by tests/console)."""
    await engine.create_workflow(
        load_workflow(
            "name: gates\nnodes:\n  - {id: go, wait: {signal: go}}\n"
            "  - {id: approval, needs: [go], wait: {signal: approval}}\n"
        )
    )
    ex = await engine.start_execution("gates", {})
    await unloaded(engine, ex.id)
    await engine.signal(ex.id, "approval", {"approved": True})

    async def received() -> list[object]:
        events = await engine.list_events(ex.id)
        return [e.data for e in events if e.type == "signal.received"]

    await eventually(received)
    assert [d["signal"] for d in await received()] == ["approval"]  # type: ignore[index]
    await engine.signal(ex.id, "go", {})
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    assert [d["signal"] for d in await received()] == ["approval", "go", "approval"]  # type: ignore[index]


async def test_a_reload_is_one_read_of_the_store(engine: Engine) -> None:
    """The reload a signal waits for reads record, nodes and signals in one step (they were
    three reads)."""
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    store = engine.store
    calls: list[str] = []
    for name in ("get_execution", "get_nodes", "pending_signals", "restore_read"):
        method = getattr(store, name)

        async def counted(*args: object, _name: str = name, _method: object = method) -> object:
            calls.append(_name)
            return await _method(*args)  # type: ignore[operator]

        setattr(store, name, counted)
    run = await engine.runs.load(ex.id)
    assert run is not None and engine.runs.get(ex.id) is run
    assert calls == ["restore_read"]
    await engine.signal(ex.id, "go", 3)
    final = await engine.wait(ex.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": 3}}
