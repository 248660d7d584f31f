"""The loop around a DAG fold: what it must not keep once the execution ended."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool
from agentrun.storage.records import ExecutionState, NodeState


async def test_a_finished_run_is_freed_by_reference_counting(harness) -> None:
    """A fold's parts refer back to it; the loop cuts those references when it stops, so a
    long-running engine (whose `tune_gc` makes full collections rare) does not keep every
    finished execution until the next one."""
    ex = await harness.start(
        """
name: freed
error_handlers:
  - {match: {nodes: "b"}, action: fallback, fallback: {tool: {name: core.echo, args: {x: 1}}}}
nodes:
  - {id: a, map: {items: "${{ [1, 2, 3] }}", node: {tool: {name: core.echo, args: {i: "${{ item }}"}}}}}
  - {id: b, needs: [a], tool: {name: core.fail, args: {type: boom}}}
  - {id: c, needs: [b], wait: {duration: 1ms}}
"""
    )
    fold = weakref.ref(harness.engine._runs[ex.id].fold)
    gc.disable()
    try:
        final = await harness.engine.wait(ex.id, timeout=30)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        await asyncio.sleep(0)
        assert fold() is None
    finally:
        gc.enable()


class _Declared(Tool):
    """Declared synchronous; `suspend` makes it wait anyway, `mark` sets a context variable."""

    synchronous = True

    def __init__(self, name: str, *, suspend: bool = False, mark: bool = False) -> None:
        self.name = name
        self.suspend = suspend
        self.mark = mark
        self.seen: list[Any] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.seen.append(_MARK.get())
        if self.mark:
            _MARK.set("leaked")
        if self.suspend:
            await asyncio.sleep(0)
        return args


_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_mark", default=None)
_LIAR = _Declared("t.liar", suspend=True)
_MARKER = _Declared("t.marker", mark=True)


@pytest.mark.parametrize("extra_tools", [[_LIAR]])
async def test_a_synchronous_tool_that_suspends_fails_its_attempt(harness) -> None:
    """A synchronous tool runs on the run's own loop; one that waits after all would hold it,
    so its attempt fails, naming the tool, instead of going on."""
    final, nodes = await harness.run(
        """
name: liar
nodes:
  - {id: a, tool: {name: t.liar, args: {x: 1}}, retry: {max_attempts: 1}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["a"].state is NodeState.FAILED
    assert nodes["a"].error is not None
    assert nodes["a"].error["type"] == "internal"
    assert "t.liar" in nodes["a"].error["message"]


@pytest.mark.parametrize("extra_tools", [[_MARKER]])
async def test_a_synchronous_tool_runs_in_a_context_of_its_own(harness) -> None:
    """What a synchronous tool sets in its context stays there, as in a task of its own."""
    _MARKER.seen.clear()
    final, _ = await harness.run(
        """
name: marks
nodes:
  - {id: a, tool: {name: t.marker, args: {}}}
  - {id: b, needs: [a], tool: {name: t.marker, args: {}}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert _MARKER.seen == [None, None]


async def test_a_chain_of_synchronous_steps_lets_other_tasks_run(harness) -> None:
    """In memory, a chain of synchronous tools never waits for anything (its commits and calls
    answer at once); the run still lets the loop's other tasks run while it goes on."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    seen: list[int] = []

    class Count(Tool):
        name = "t.count"
        synchronous = True

        async def call(self, args: Any, ctx: CallContext) -> Any:
            seen.append(ticks)
            return args

    harness.registry.register(Count())
    nodes = "\n".join(
        f"  - {{id: n{i}, tool: {{name: t.count, args: {{}}}}"
        + (f", needs: [n{i - 1}]}}" if i else "}")
        for i in range(100)
    )
    task = asyncio.create_task(ticker())
    try:
        final, _ = await harness.run(f"name: busy\nnodes:\n{nodes}\n")
    finally:
        task.cancel()
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert len(seen) == 100
    assert seen[-1] > seen[0]
