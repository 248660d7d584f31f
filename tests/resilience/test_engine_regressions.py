"""Regressions for engine bugs found while testing resilience (fixed in 7be749e; each test
was a strict xfail until then)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, IllegalTransition, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState


async def test_non_retryable_glob_is_not_retried() -> None:
    """RetrySpec.allows_retry matched `non_retryable` by exact name only; workflow-format.md
    says exact names or globs (`payments.*`)."""
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        spec = load_workflow(
            """
name: glob
nodes:
  - id: charge
    tool: {name: core.fail, args: {type: payments.declined}}
    retry: {max_attempts: 3, initial_interval: 1ms, non_retryable: ["payments.*"]}
"""
        )
        await engine.create_workflow(spec)
        ex = await engine.start_execution("glob", {})
        final = await engine.wait(ex.id, timeout=30)
        nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    finally:
        await engine.stop(grace=0)
    assert final.state is ExecutionState.FAILED
    assert nodes["charge"].attempt == 1


class _StaleReads(MemoryStore):
    """A store whose execution reads can come back late (as aiosqlite's do: the answer is
    read in a thread and handed back later), so the answer can be stale. After
    `stale_next()`, the next execution read answers only once the execution has ended, with
    the record it read before: the execution ends while that read is in flight, however fast
    or slow the machine is."""

    def __init__(self) -> None:
        super().__init__()
        self._stale_next = False

    def stale_next(self) -> None:
        self._stale_next = True

    async def get_execution(self, execution_id: str):  # type: ignore[override]
        record = await super().get_execution(execution_id)
        if self._stale_next:
            self._stale_next = False
            await _until(lambda: _ended(super(_StaleReads, self), execution_id))
        return record


async def _ended(store: MemoryStore, execution_id: str) -> bool:
    record = await store.get_execution(execution_id)
    return record is not None and record.state.terminal


async def _until(predicate, timeout: float = 30.0) -> None:
    """Polls an async predicate until it holds (a generous bound: the machine may be slow)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def _node_is(engine: Engine, execution_id: str, node_id: str, state: str) -> bool:
    return any(
        n.node_id == node_id and n.state.value == state
        for n in await engine.get_nodes(execution_id)
    )


async def _has_event(engine: Engine, execution_id: str, type_: str, node_id: str) -> bool:
    return any(
        e.type == type_ and e.node_id == node_id for e in await engine.list_events(execution_id)
    )


async def _finishing_during_the_read(action: str):
    """Starts a one-node execution, then calls `action` while the store read inside the
    call is in flight and the execution finishes meanwhile."""
    store = _StaleReads()
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        await engine.create_workflow(
            load_workflow(
                "name: short\nnodes:\n  - {id: a, tool: {name: core.sleep, args: {seconds: 0.3}}}\n"
            )
        )
        ex = await engine.start_execution("short", {})
        await _until(lambda: _has_event(engine, ex.id, "node.running", "a"))  # RUNNING
        store.stale_next()  # the execution ends while the call's read is in flight
        try:
            # Bounded below the 10 s a call spent polling 'another replica' before the fix.
            async with asyncio.timeout(8):
                if action == "pause":
                    result = await engine.pause(ex.id)
                elif action == "resume":
                    result = await engine.resume(ex.id)
                else:
                    result = await engine.cancel(ex.id)
        except IllegalTransition as exc:
            result = exc
        final = await engine.get_execution(ex.id)
    finally:
        await engine.stop(grace=0)
    return result, final


# Before the fix, Engine._control took the state from a store read made before it looked the
# run up: when the execution finished while that read was in flight (aiosqlite answers from a
# thread, so the race is real on SQLite), the stale RUNNING record sent the call to the
# 'another replica runs it' branch (pause polled 10 s, then Unavailable; cancel was
# 'acknowledged' on a finished execution), or, with the finished run still in _runs, the
# refusal named the stale state ('RUNNING ... not running in this server').


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
async def test_control_racing_the_end_names_the_final_state(action: str) -> None:
    result, final = await _finishing_during_the_read(action)
    assert final.state is ExecutionState.SUCCEEDED
    assert isinstance(result, IllegalTransition), f"{action} answered {result!r}"
    assert result.current_state == "SUCCEEDED"


async def test_pause_stops_map_items_from_starting() -> None:
    """Run._item_done -> _fill_map (and _item_retry) started queued map items while paused,
    so a bounded map ran to its end in PAUSED. Queued items wait for resume, which refills."""
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        await engine.create_workflow(
            load_workflow(
                """
name: fan
nodes:
  - id: m
    map:
      items: "${{ input.xs }}"
      max_concurrency: 1
      node: {tool: {name: core.sleep, args: {seconds: 0.05}}}
"""
            )
        )
        ex = await engine.start_execution("fan", {"xs": [1, 2, 3, 4, 5, 6]})
        await _until(lambda: _has_event(engine, ex.id, "node.running", "m[0]"))
        assert (await engine.pause(ex.id)).state is ExecutionState.PAUSED
        await _until(lambda: _has_event(engine, ex.id, "node.succeeded", "m[0]"))
        await asyncio.sleep(0.3)  # a wrongly refilled item would start now
        events = await engine.list_events(ex.id)
        state = (await engine.get_execution(ex.id)).state
        await engine.resume(ex.id)
        final = await engine.wait(ex.id, timeout=30)
    finally:
        await engine.stop(grace=0)
    paused_at = next(e.sequence for e in events if e.type == "execution.paused")
    started = [e.node_id for e in events if e.type == "node.running" and e.sequence > paused_at]
    assert started == [], f"started while paused: {started}"
    assert state is ExecutionState.PAUSED
    assert final.state is ExecutionState.SUCCEEDED  # resume refilled the map
    assert final.output == {"m": [{"slept": 0.05}] * 6}


SAGA_WITH_SLOW_UNDO = """
name: undo-slowly
nodes:
  - id: a
    tool: {name: core.echo, args: {x: 1}}
    compensate: {tool: {name: test.gate}}
  - id: b
    needs: [a]
    tool: {name: core.echo, args: {x: 2}}
    compensate: {tool: {name: test.gate}}
  - {id: slow, needs: [b], tool: {name: core.sleep, args: {seconds: 30}}}
"""


class _Gate(Tool):
    """An undo that runs until the test opens the gate: the saga is still compensating
    when the test looks, however slow the machine is."""

    name = "test.gate"
    effect = Effect.IDEMPOTENT

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await self.opened.wait()
        return {}


@pytest.mark.parametrize("second", ["resume", "pause"])
async def test_pause_or_resume_racing_a_compensating_cancel_leaves_the_saga_alone(
    second: str,
) -> None:
    store = MemoryStore()
    gate = _Gate()

    def make() -> Engine:
        tools = default_tools()
        tools.register(gate)
        return Engine(store, tools=tools, agents=default_agents())

    engine = make()
    await engine.start()
    restarted = None
    try:
        await engine.create_workflow(load_workflow(SAGA_WITH_SLOW_UNDO))
        ex = await engine.start_execution("undo-slowly", {})
        await _until(lambda: _node_is(engine, ex.id, "slow", "RUNNING"))
        if second == "resume":
            await engine.pause(ex.id)
        # Both legal when checked; the run handles them in one turn.
        results = await asyncio.gather(
            engine.cancel(ex.id, compensate=True),
            engine.resume(ex.id) if second == "resume" else engine.pause(ex.id),
            return_exceptions=True,
        )
        mid = await engine.get_execution(ex.id)  # the first undo waits at the gate
        await engine.stop(grace=0)  # a restart in the middle of the saga
        events = await store.list_events(ex.id, limit=1000)
        gate.opened.set()
        restarted = make()
        await restarted.start()
        final = await restarted.wait(ex.id, timeout=30)
    finally:
        await engine.stop(grace=0)
        if restarted is not None:
            await restarted.stop(grace=0)
    types = [e.type for e in events]
    after = types[types.index("execution.compensating") + 1 :]
    assert "execution.running" not in after and "execution.paused" not in after, (results, types)
    assert mid.state is ExecutionState.COMPENSATING, results
    assert final.state is ExecutionState.COMPENSATED


async def test_resume_racing_a_compensating_cancel_starts_no_map_items() -> None:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        await engine.create_workflow(
            load_workflow(
                """
name: fan-saga
nodes:
  - id: a
    tool: {name: core.echo, args: {x: 1}}
    compensate: {tool: {name: core.sleep, args: {seconds: 0.2}}}
  - id: m
    needs: [a]
    map:
      items: "${{ input.xs }}"
      max_concurrency: 1
      node: {tool: {name: core.sleep, args: {seconds: 0.05}}}
"""
            )
        )
        ex = await engine.start_execution("fan-saga", {"xs": list(range(6))})
        await _until(lambda: _has_event(engine, ex.id, "node.running", "m[0]"))
        await engine.pause(ex.id)
        await _until(lambda: _has_event(engine, ex.id, "node.succeeded", "m[0]"))  # the rest queued
        await asyncio.gather(engine.cancel(ex.id, compensate=True), engine.resume(ex.id))
        final = await engine.wait(ex.id, timeout=30)
        events = await engine.list_events(ex.id)
    finally:
        await engine.stop(grace=0)
    types = [e.type for e in events]
    after = events[types.index("execution.compensating") :]
    started = [
        e.node_id
        for e in after
        if e.type == "node.running" and not e.node_id.endswith(".compensate")
    ]
    assert started == [], f"forward work during the saga: {started}"
    assert final.state is ExecutionState.COMPENSATED
