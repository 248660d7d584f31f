"""A tenant's full queue of pending starts answers RESOURCE_EXHAUSTED with RetryInfo and
QuotaFailure (it answered INTERNAL: the engine's reason had no status)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.engine import Engine
from agentrun.engine.engine import EngineConfig
from agentrun.engine.scheduler import SchedulerConfig
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.storage.memory import MemoryStore
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc
from tests.server.conftest import STOP_GRACE

WAITER = """
name: waiter
nodes:
  - id: hold
    wait: {signal: go}
"""


async def test_full_pending_queue_is_resource_exhausted_with_quota_failure() -> None:
    limits = SchedulerConfig(
        max_running_executions_per_tenant=1, max_pending_executions_per_tenant=1
    )
    engine = Engine(
        MemoryStore(),
        tools=default_tools(),
        agents=default_agents(),
        config=EngineConfig(scheduler=limits),
    )
    await engine.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await ws_grpc.WorkflowServiceStub(channel).CreateWorkflow(
                ws.CreateWorkflowRequest(source=WAITER)
            )
            executions = es_grpc.ExecutionServiceStub(channel)
            start = es.StartExecutionRequest(workflow="workflows/waiter")
            await executions.StartExecution(start)  # runs (waits for its signal)
            await executions.StartExecution(start)  # pending: the tenant runs one at a time
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async with asyncio.timeout(30):
                    await executions.StartExecution(start)
    finally:
        await server.stop(STOP_GRACE)
        await engine.stop(grace=0)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    quota = error_details_pb2.QuotaFailure()
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        for kind in (retry, quota, info):
            if detail.Is(kind.DESCRIPTOR):
                detail.Unpack(kind)
    assert retry.retry_delay.seconds >= 1
    assert quota.violations[0].subject == "tenant:default"
    assert "max_pending_executions_per_tenant (1)" in quota.violations[0].description
    assert info.reason == "RATE_LIMITED"
