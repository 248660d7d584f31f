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


# How long a test's server may wait for calls still in flight when it stops (none, usually: it
# then stops at once). Not 0: grpc stops a server with grace 0 by cancelling all calls, which
# sends a GOAWAY with INTERNAL_ERROR ("Cancelling all calls") on every connection still open,
# and a test's connection often is, though its channel is closed: a failed call's objects keep
# it while they live (pytest.raises' ExceptionInfo and the traceback's frames form a cycle,
# kept until the next gc). The client side logs each such GOAWAY ("Got goaway [2]"), on the
# terminal under pytest-xdist. A graceful stop sends a GOAWAY with NO_ERROR, which it does not.
STOP_GRACE = 5.0


def _config(**overrides: Any) -> ServerConfig:
    return ServerConfig.load(env={}, **overrides)


@pytest.fixture
async def server(engine: Any) -> AsyncIterator[AgentrunServer]:
    server = AgentrunServer(engine, _config())
    await server.start("127.0.0.1:0")
    yield server
    await server.stop(STOP_GRACE)


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
    await server.stop(STOP_GRACE)


ECHO_CHAIN = """
name: {name}
nodes:
  - id: a
    pass: {{value: 1}}
  - id: b
    needs: [a]
    pass: {{value: 2}}
"""
