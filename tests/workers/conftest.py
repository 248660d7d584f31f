"""An in-process server with WorkerService over a real store, and workers in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agentrun.client import AsyncClient
from agentrun.engine import Engine, EngineConfig
from agentrun.integrations import default_agents, default_tools
from agentrun.integrations.workers import Workers, WorkersConfig
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.storage.memory import MemoryStore
from agentrun.worker import Worker
from tests.server.conftest import STOP_GRACE

FAST = WorkersConfig(heartbeat=0.2, lease=1.0, poll=0.2)


@dataclass
class Served:
    server: AgentrunServer
    engine: Engine
    workers: Workers
    client: AsyncClient
    address: str
    worker: Callable[..., Worker]


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig.load(env={})


@pytest.fixture
async def served(server_config: ServerConfig) -> AsyncIterator[Served]:
    store = MemoryStore()
    tools = default_tools()
    engine = Engine(
        store, tools=tools, agents=default_agents(tools=tools), config=EngineConfig(replica_id="r1")
    )
    workers = Workers(store, tools, replica="r1", config=FAST)
    server = AgentrunServer(engine, server_config, workers=workers)
    await store.open()
    await workers.start()
    await engine.start()
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    started: list[Any] = []

    def worker(**kw: Any) -> Worker:
        w = Worker(address, **kw)
        started.append(w)
        return w

    async with AsyncClient(address, api_key="") as client:
        yield Served(server, engine, workers, client, address, worker)
    for w in started:
        w.stop()
    await server.stop(STOP_GRACE)
    await engine.stop(grace=0)
    await workers.stop()
