"""The suite-wide check (tests/conftest.py) sees what clients see: every finished call's final
status reaches CALL_OBSERVERS, INTERNAL from a mapped bug and UNKNOWN from an exception that
escapes outside the error mapping included, so the check cannot pass by not looking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentrun.server import AgentrunServer
from agentrun.server.interceptors import CALL_OBSERVERS
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from tests.server.subprocess_server import ServerProcess


@pytest.fixture
def observed() -> Iterator[list[tuple[str, grpc.StatusCode]]]:
    calls: list[tuple[str, grpc.StatusCode]] = []

    def observe(method: str, code: grpc.StatusCode) -> None:
        calls.append((method, code))

    CALL_OBSERVERS.append(observe)
    yield calls
    CALL_OBSERVERS.remove(observe)


async def test_ok_and_mapped_errors_are_observed(
    server: AgentrunServer, observed: list[tuple[str, grpc.StatusCode]]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = es_grpc.ExecutionServiceStub(channel)
        await stub.ListExecutions(es.ListExecutionsRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetExecution(es.GetExecutionRequest(name="executions/nope"))
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/agentrun.v1.ExecutionService/GetExecution")(b"\x0a\x05ab")
    # (other servers of the session, such as tests/security's, may be probed meanwhile)
    ours = await _observed_calls(observed, 3, lambda call: call[0].startswith("/agentrun."))
    assert ours == [
        ("/agentrun.v1.ExecutionService/ListExecutions", grpc.StatusCode.OK),
        ("/agentrun.v1.ExecutionService/GetExecution", grpc.StatusCode.NOT_FOUND),
        ("/agentrun.v1.ExecutionService/GetExecution", grpc.StatusCode.INVALID_ARGUMENT),
    ]


async def _observed_calls(
    observed: list[tuple[str, grpc.StatusCode]],
    count: int,
    keep: Callable[[tuple[str, grpc.StatusCode]], bool],
) -> list[tuple[str, grpc.StatusCode]]:
    """The observed calls `keep` selects, once `count` of them are (or after 10 s): the server
    tells its observers after the status went out, so on a busy machine the client may see it
    first."""
    for _ in range(200):
        kept = [call for call in observed if keep(call)]
        if len(kept) >= count:
            break
        await asyncio.sleep(0.05)
    return kept


@pytest.mark.allow_rpc_status("INTERNAL", "UNKNOWN", reason="provoked on purpose")
async def test_internal_and_unknown_are_observed(
    server: AgentrunServer,
    observed: list[tuple[str, grpc.StatusCode]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.engine, "get_execution", broken)
    # Health is outside the error mapping: its bug escapes to grpc, which answers UNKNOWN.
    monkeypatch.setattr(server.health, "_server_status", None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await es_grpc.ExecutionServiceStub(channel).GetExecution(
                es.GetExecutionRequest(name="executions/x")
            )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert internal.value.code() == grpc.StatusCode.INTERNAL
    assert unknown.value.code() == grpc.StatusCode.UNKNOWN
    calls = await _observed_calls(observed, 2, lambda call: call[1] is not grpc.StatusCode.OK)
    failed = [code for _, code in calls]
    assert failed == [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN]


def test_serve_children_log_every_status_the_check_reads(tmp_path: Path) -> None:
    """The check reads `agentrun serve` children from their access logs: the lines parse."""
    server = ServerProcess(tmp_path).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = es_grpc.ExecutionServiceStub(channel)
            stub.ListExecutions(es.ListExecutionsRequest())
            with pytest.raises(grpc.RpcError):
                stub.GetExecution(es.GetExecutionRequest(name="executions/nope"))
    finally:
        server.stop()
    calls = server.new_calls()
    assert ("/agentrun.v1.ExecutionService/ListExecutions", "OK") in calls, calls
    assert ("/agentrun.v1.ExecutionService/GetExecution", "NOT_FOUND") in calls, calls
