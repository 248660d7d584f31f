"""Pure synchronous tools (`Tool.synchronous`, `Effect.PURE`) run inside the turn that begins
them, as a `pass` node computes; any other call is recorded RUNNING in the store before it
runs."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState


class _Probe(Tool):
    """Synchronous; notes the stored state of its own node when called, emits an event."""

    synchronous = True

    def __init__(self, name: str, effect: Effect) -> None:
        self.name = name
        self.effect = effect
        self.store: MemoryStore | None = None
        self.stored: list[NodeState | None] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        assert self.store is not None
        node = self.store.executions._nodes.get(ctx.execution_id, {}).get(ctx.node_id)
        self.stored.append(None if node is None else node.state)
        assert ctx.emit is not None
        ctx.emit("probe.called", {"node": ctx.node_id})
        return args


_PURE = _Probe("t.pure", Effect.PURE)
_IDEMPOTENT = _Probe("t.idempotent", Effect.IDEMPOTENT)


def _chain(tool: str, n: int) -> str:
    nodes = "\n".join(
        f"  - {{id: n{i}, tool: {{name: {tool}, args: {{i: {i}}}}}"
        + (f", needs: [n{i - 1}]}}" if i else "}")
        for i in range(n)
    )
    return f"name: chain\nnodes:\n{nodes}\n"


@pytest.mark.parametrize("extra_tools", [[_PURE]])
async def test_a_pure_synchronous_tool_runs_inside_the_turn(harness) -> None:
    """Its attempt is not committed RUNNING before it runs (repeating it changes nothing):
    the whole chain is decided in the execution's first turn, one commit, with every event
    a watcher sees, in the order the loop would have written them."""
    store = harness.engine.store
    _PURE.store, _PURE.stored = store, []
    commits = 0
    commit = store.commit

    async def counting(batch: Any) -> None:
        nonlocal commits
        commits += 1
        await commit(batch)

    store.commit = counting
    at_once = store.commit_at_once  # a run's turns commit so on the memory store

    def counting_at_once(batch: Any) -> bool:
        nonlocal commits
        commits += 1
        return at_once(batch)

    store.commit_at_once = counting_at_once
    final, _ = await harness.run(_chain("t.pure", 3))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output == {"n2": {"i": 2}}
    assert _PURE.stored == [None, None, None]  # not even READY: nothing was committed yet
    assert commits == 0  # the creation's commit held it all
    events = [(e.type, e.node_id) for e in await harness.events(final.id)]
    per_node = [
        (t, n)
        for i in range(3)
        for t, n in [
            ("node.ready", f"n{i}"),
            ("node.running", f"n{i}"),
            ("probe.called", f"n{i}"),
            ("node.succeeded", f"n{i}"),
        ]
    ]
    assert events == [
        ("execution.pending", None),
        ("execution.running", None),
        *per_node,
        ("execution.succeeded", None),
    ]
    assert [e.sequence for e in await harness.events(final.id)] == list(range(1, 16))


@pytest.mark.parametrize("extra_tools", [[_IDEMPOTENT]])
async def test_any_other_synchronous_tool_runs_once_its_attempt_is_stored(harness) -> None:
    """An attempt's number is written before the call it numbers."""
    _IDEMPOTENT.store, _IDEMPOTENT.stored = harness.engine.store, []
    final, _ = await harness.run(_chain("t.idempotent", 3))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert _IDEMPOTENT.stored == [NodeState.RUNNING] * 3


async def test_a_long_map_of_pure_calls_one_at_a_time(harness) -> None:
    """Each inline item's outcome starts the next item: they queue, nothing recurses."""
    final, nodes = await harness.run(
        """
name: many
nodes:
  - id: each
    map:
      items: "${{ input.items }}"
      max_concurrency: 1
      node: {tool: {name: core.echo, args: {i: "${{ item }}"}}}
""",
        {"items": list(range(3000))},
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["each"].output == [{"i": i} for i in range(3000)]
