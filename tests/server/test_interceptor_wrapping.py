"""The server's interceptors wrap each method's handler once, where it is registered: a call
runs the wrapped behaviour and no interceptor's `intercept_service` (grpc.aio would run every
one of them on every call). Auth, limits and errors still apply to every method, health and
reflection included (test_errors.py has those cases)."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.client import AsyncClient
from agentrun.client.errors import Unauthenticated
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.auth import ApiKey
from tests.server.conftest import STOP_GRACE

ONE = "name: one\nnodes:\n  - id: only\n    pass: {value: 1}\n"


async def test_calls_run_no_intercept_service(engine: Any, monkeypatch: Any) -> None:
    server = AgentrunServer(
        engine, ServerConfig.load(env={}, api_keys=[ApiKey("key-a", "acme", name="a")])
    )
    per_call: list[str] = []
    for interceptor in server.interceptors:
        original = interceptor.intercept_service

        async def counted(continuation: Any, details: Any, original: Any = original) -> Any:
            per_call.append(details.method)
            return await original(continuation, details)

        monkeypatch.setattr(interceptor, "intercept_service", counted)
    await server.start("127.0.0.1:0")
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="key-a") as client:
            await client.create_workflow(source=ONE)
            for n in range(3):
                started = await client.start_execution("one", request_id=f"r{n}")
                assert started.workflow == "one"
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="wrong") as client:
            with pytest.raises(Unauthenticated):
                await client.start_execution("one")
    finally:
        await server.stop(STOP_GRACE)
    assert per_call == []


def test_methods_reach_grpc_through_one_generic_handler() -> None:
    """grpc.aio keeps a pending request per registered method and waits on all of them for
    every call it accepts: the registry registers none, and its first generic handler finds
    each method by name (the wrapped handler the HTTP port serves too)."""
    from agentrun.server.http.registry import HandlerRegistry
    from agentrun.v1 import execution_service_pb2_grpc as execution_grpc

    class Recorder:
        def __init__(self) -> None:
            self.generic: list[Any] = []
            self.registered: list[str] = []

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            self.generic.extend(handlers)

        def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
            self.registered.append(service)

    server = Recorder()
    registry = HandlerRegistry(server, lambda handler, method: handler)  # type: ignore[arg-type]
    execution_grpc.add_ExecutionServiceServicer_to_server(
        execution_grpc.ExecutionServiceServicer(), registry
    )
    assert server.registered == []

    class Details:
        method = "/agentrun.v1.ExecutionService/StartExecution"
        invocation_metadata = ()

    found = server.generic[0].service(Details())
    assert found is registry.handlers[Details.method]
    Details.method = "/agentrun.v1.ExecutionService/NoSuchMethod"
    assert server.generic[0].service(Details()) is None
