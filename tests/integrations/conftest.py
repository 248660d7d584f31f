"""Integration fixtures: a real engine over the in-memory store with the integrations' tools
and providers, and helpers to run YAML workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionRecord, NodeRecord


class Runner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(
        self, yaml_text: str, input: Any = None, *, timeout: float = 15
    ) -> tuple[ExecutionRecord, dict[str, NodeRecord]]:
        spec = load_workflow(yaml_text)
        await self.engine.create_workflow(spec)
        ex = await self.engine.start_execution(spec.name, input)
        final = await self.engine.wait(ex.id, timeout=timeout)
        nodes = {n.node_id: n for n in await self.engine.get_nodes(ex.id)}
        return final, nodes

    async def events(self, execution_id: str) -> list[Any]:
        return await self.engine.list_events(execution_id, limit=100_000)


async def make_engine(
    config: Mapping[str, Any] | None = None,
    *,
    extra_tools: list[Any] = (),
    secrets: Mapping[str, str] | None = None,
    store: Any = None,
) -> Engine:
    tools: Registry = default_tools(config)
    for tool in extra_tools:
        tools.register(tool)
    engine = Engine(
        store or MemoryStore(),
        tools=tools,
        agents=default_agents(config, tools=tools),
        config=EngineConfig(seed=7, secrets=dict(secrets or {})),
    )
    await engine.start()
    return engine


@pytest.fixture
async def runner_factory() -> AsyncIterator[Any]:
    engines: list[Engine] = []

    async def make(config: Mapping[str, Any] | None = None, **kw: Any) -> Runner:
        engine = await make_engine(config, **kw)
        engines.append(engine)
        return Runner(engine)

    yield make
    for engine in engines:
        await engine.stop(grace=0)
        await engine.tools.aclose()  # MCP sessions, when the config named MCP servers
