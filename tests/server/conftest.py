"""Fixtures: the real engine over a memory store, a real grpc.aio server on port 0 around it,
and SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.client import AsyncClient
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.auth import ApiKey


async def make_engine() -> Any:
    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore

    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    return engine


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    engine = await make_engine()
    yield engine
    await engine.stop(grace=0)


def _config(**overrides: Any) -> ServerConfig:
    return ServerConfig.load(env={}, **overrides)


@pytest.fixture
async def server(engine: Any) -> AsyncIterator[AgentrunServer]:
    server = AgentrunServer(engine, _config())
    await server.start("127.0.0.1:0")
    yield server
    await server.stop(0)


@pytest.fixture
async def client(server: AgentrunServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key="") as client:
        yield client


KEYS = [
    ApiKey("key-acme", "acme", name="acme"),
    ApiKey("key-globex", "globex", name="globex"),
    ApiKey("key-slow", "acme", rate=1, burst=2, name="slow"),
]


@pytest.fixture
async def auth_server(engine: Any) -> AsyncIterator[AgentrunServer]:
    server = AgentrunServer(engine, _config(api_keys=KEYS, max_message_bytes=1024 * 1024))
    await server.start("127.0.0.1:0")
    yield server
    await server.stop(0)


ECHO_CHAIN = """
name: {name}
nodes:
  - id: a
    pass: {{value: 1}}
  - id: b
    needs: [a]
    pass: {{value: 2}}
"""
