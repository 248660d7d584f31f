"""Engine fixtures: a real engine over the in-memory store, and helpers to run YAML."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionRecord, NodeRecord


class Harness:
    def __init__(self, engine: Engine, registry: Registry) -> None:
        self.engine = engine
        self.registry = registry

    async def run(
        self,
        yaml_text: str,
        input: Any = None,
        *,
        signals: dict[str, Any] | None = None,
        timeout: float = 10,
    ) -> tuple[ExecutionRecord, dict[str, NodeRecord]]:
        spec = load_workflow(yaml_text)
        await self.engine.create_workflow(spec)
        ex = await self.engine.start_execution(spec.name, input)
        for name, data in (signals or {}).items():
            await self.engine.signal(ex.id, name, data)
        final = await self.engine.wait(ex.id, timeout=timeout)
        nodes = {n.node_id: n for n in await self.engine.get_nodes(ex.id)}
        return final, nodes

    async def start(self, yaml_text: str, input: Any = None) -> ExecutionRecord:
        spec = load_workflow(yaml_text)
        await self.engine.create_workflow(spec)
        return await self.engine.start_execution(spec.name, input)

    async def events(self, execution_id: str) -> list[Any]:
        return await self.engine.list_events(execution_id, limit=100_000)


@pytest.fixture
def extra_tools() -> list[Any]:
    return []


@pytest.fixture
def mock_responses() -> dict[str, Any]:
    return {}


@pytest.fixture
async def harness(extra_tools: list[Any], mock_responses: dict[str, Any]) -> AsyncIterator[Harness]:
    registry = Registry([*core_tools(), *extra_tools])
    engine = Engine(
        MemoryStore(),
        tools=registry,
        agents=default_agents({"mock": {"responses": mock_responses}}),
        config=EngineConfig(seed=7),
    )
    await engine.start()
    yield Harness(engine, registry)
    await engine.stop(grace=0)


async def eventually(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    """Polls an async or sync predicate until it holds; the bound is generous (a loaded
    machine is slow), it only decides how long a failing test takes to say so."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
