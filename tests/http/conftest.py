"""Fixtures: the real engine (with state machines) over a memory store, a real gRPC server on
port 0 and its HTTP port on port 0, and plain HTTP clients that speak Connect as curl would."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.http.server import HttpServer
from tests.server.conftest import KEYS, STOP_GRACE

# Workflows the HTTP tests share: a human step, and a state machine.
APPROVAL = """
name: approval
input_schema: {type: object, required: [n], properties: {n: {type: integer}}}
nodes:
  - id: ask
    wait: {signal: approve}
  - id: done
    needs: [ask]
    pass: {value: "${{ nodes.ask.output }}"}
"""

ORDER = """
name: order
mode: state_machine
initial: pending
data: {paid: 0}
states:
  pending:
    on:
      PAY: {target: paid, assign: {paid: "${{ event.data.amount }}"}}
      CANCEL: cancelled
  paid: {on: {SHIP: shipped}}
  shipped: {final: true}
  cancelled: {final: true}
"""


@dataclass
class Served:
    grpc: AgentrunServer
    http: HttpServer
    engine: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc.port}"


async def _serve(**overrides: Any) -> AsyncIterator[Served]:
    from agentrun.engine import Engine
    from agentrun.engine.machine import MachineEngine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore

    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    machines = MachineEngine(engine)
    await engine.start()
    await machines.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}, **overrides))
    await server.start("127.0.0.1:0")
    http = HttpServer(server)
    await http.start("127.0.0.1:0")
    try:
        yield Served(server, http, engine)
    finally:
        await server.drain()
        await http.stop(0)
        await server.stop(STOP_GRACE)
        await machines.stop()
        await engine.stop(grace=0)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in _serve():
        yield s


@pytest.fixture
async def auth_served() -> AsyncIterator[Served]:
    async for s in _serve(api_keys=KEYS):
        yield s


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        yield client


# ------------------------------------------------------------------ Connect, by hand


class ConnectError(Exception):
    """A Connect error response: HTTP status, `code`, `message` and decoded details."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.code = body.get("code")
        self.message = body.get("message", "")
        self.details = body.get("details", [])

    def detail(self, type_name: str) -> dict[str, Any]:
        """The `debug` JSON of the first detail of that type (after checking its bytes)."""
        for detail in self.details:
            if detail["type"] == type_name:
                base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
                return dict(detail["debug"])
        raise AssertionError(f"no {type_name} in {self.details}")


async def unary(
    client: httpx.AsyncClient,
    method: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST /agentrun.v1.<method> with a JSON body, as `curl -d` would; raises ConnectError."""
    path = method if method.startswith("/") else f"/agentrun.v1.{method}"
    response = await client.post(
        path,
        content=json.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
    )
    data = response.json()
    if response.status_code != 200:
        raise ConnectError(response.status_code, data)
    return dict(data)


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def read_envelopes(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        flags, size = struct.unpack(">BI", data[:5])
        out.append((flags, data[5 : 5 + size]))
        data = data[5 + size :]
    return out


async def stream(
    client: httpx.AsyncClient,
    method: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A Connect server stream (application/connect+json): the messages, in order; the
    end-of-stream message's error is raised as ConnectError."""
    path = method if method.startswith("/") else f"/agentrun.v1.{method}"
    response = await client.post(
        path,
        content=envelope(json.dumps(body).encode()),
        headers={"content-type": "application/connect+json", **(headers or {})},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/connect+json"
    messages = []
    for flags, payload in read_envelopes(response.content):
        if flags & 0x02:  # end of stream
            end = json.loads(payload)
            if "error" in end:
                raise ConnectError(200, end["error"])
            return messages
        messages.append(json.loads(payload))
    raise AssertionError("the stream had no end-of-stream message")
