"""Explicit limits: keepalive enforcement (a client that pings too often is sent away)."""

from __future__ import annotations

import grpc
import pytest

from agentrun.engine import load_workflow
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from tests.server.conftest import STOP_GRACE

pytestmark = pytest.mark.timeout(30)


async def test_pinging_too_often_gets_goaway(engine) -> None:
    server = AgentrunServer(engine, ServerConfig.load(env={}, min_ping_interval=5.0))
    port = await server.start("127.0.0.1:0")
    await engine.create_workflow(
        load_workflow("name: h\nnodes:\n  - id: w\n    wait: {signal: go}\n")
    )
    execution = await engine.start_execution("h", {})
    options = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = es_grpc.ExecutionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                request = es.WatchExecutionRequest(name=execution.id)
                async for _ in stub.WatchExecution(request, timeout=20):
                    pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ping" in (caught.value.details() or "").lower()
    finally:
        await server.stop(STOP_GRACE)
