"""Secrets never reach the store or events; token usage sums on nodes and executions."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState

SECRET = "sk-live-0123456789"


class Leaky(Tool):
    """Echoes what it was given and reports token usage, as an LLM call would."""

    name = "test.leaky"

    async def call(self, args: Any, ctx: CallContext) -> Any:
        ctx.emit("agent.usage", {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01})
        if args.get("fail"):
            raise ToolFailure("tool_error", f"auth failed with key {args['key']}")
        return {"echo": args["key"], "note": f"used {args['key']}"}


@pytest.fixture
async def engine():
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), Leaky()]),
        agents=default_agents(),
        config=EngineConfig(secrets={"api_key": SECRET}),
    )
    await engine.start()
    yield engine
    await engine.stop(grace=0)


async def test_secret_values_are_redacted_everywhere(engine) -> None:
    await engine.create_workflow(
        load_workflow(
            """
name: s
nodes:
  - {id: a, tool: {name: test.leaky, args: {key: "${{ secrets.api_key }}"}}}
  - {id: b, needs: [a], pass: {value: "${{ size(nodes.a.output.echo) }}"}}
  - {id: c, needs: [b], tool: {name: test.leaky, args: {key: "${{ secrets.api_key }}", fail: true}}}
"""
        )
    )
    ex = await engine.start_execution("s", {})
    final = await engine.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.FAILED
    nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    # The live run saw the real value (its length), the store never did.
    assert nodes["b"].output == len(SECRET)
    dumped = repr(final) + repr(list(nodes.values())) + repr(await engine.list_events(ex.id))
    assert SECRET not in dumped
    assert "[REDACTED]" in repr(nodes["a"].output) and "[REDACTED]" in final.error["message"]


async def test_usage_sums_on_nodes_and_execution(engine) -> None:
    await engine.create_workflow(
        load_workflow(
            """
name: u
nodes:
  - {id: a, tool: {name: test.leaky, args: {key: k}}}
  - id: m
    map: {items: "${{ [1, 2, 3] }}", node: {tool: {name: test.leaky, args: {key: k}}}}
"""
        )
    )
    ex = await engine.start_execution("u", {})
    final = await engine.wait(ex.id, timeout=30)
    nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    assert nodes["a"].usage == {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01}
    assert nodes["m"].usage["prompt_tokens"] == 30
    assert nodes["m[1]"].usage["completion_tokens"] == 5
    assert final.usage["prompt_tokens"] == 40
    assert final.usage["cost"] == pytest.approx(0.04)
    assert [e.type for e in await engine.list_events(ex.id)].count("agent.usage") == 4
