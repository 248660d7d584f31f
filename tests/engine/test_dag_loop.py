"""The loop around a DAG fold: what it must not keep once the execution ended."""

from __future__ import annotations

import asyncio
import gc
import weakref

from agentrun.storage.records import ExecutionState


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
