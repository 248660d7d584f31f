"""Per illegal transition, over gRPC: FAILED_PRECONDITION, with the current state in the
ErrorInfo metadata (`current_state`) and in a PreconditionFailure violation (type STATE).

An in-process grpc.aio server on port 0 around a real engine over the memory store (the
pattern of tests/server/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.client import errors as sdk_errors
from agentrun.engine import Engine
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.storage.memory import MemoryStore
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc
from tests.server.conftest import STOP_GRACE

pytestmark = pytest.mark.timeout(60)

SLOW = """
name: slow
nodes:
  - {id: a, tool: {name: core.sleep, args: {seconds: 30}}}
"""
QUICK = """
name: quick
nodes:
  - {id: a, tool: {name: core.echo, args: {x: 1}}}
"""
BROKEN = """
name: broken
nodes:
  - {id: a, tool: {name: core.fail, args: {type: boom}}}
"""
SAGA = """
name: saga
nodes:
  - id: a
    tool: {name: core.echo, args: {x: 1}}
    compensate: {tool: {name: core.echo, args: {undo: 1}}}
  - {id: b, needs: [a], tool: {name: core.fail, args: {type: boom}}}
error_handlers:
  - {match: {nodes: b}, action: compensate}
"""


@dataclass
class Env:
    engine: Engine
    stub: es_grpc.ExecutionServiceStub

    async def start(self, workflow: str) -> str:
        response = await self.stub.StartExecution(es.StartExecutionRequest(workflow=workflow))
        return response.execution.name.removeprefix("executions/")

    async def finished(self, workflow: str) -> str:
        execution_id = await self.start(workflow)
        await self.engine.wait(execution_id, timeout=10)
        return execution_id

    async def running(self) -> str:
        execution_id = await self.start("slow")
        async with asyncio.timeout(5):
            while (await self.engine.get_execution(execution_id)).state.value != "RUNNING":
                await asyncio.sleep(0.01)
        return execution_id

    async def paused(self) -> str:
        execution_id = await self.running()
        await self.engine.pause(execution_id)
        return execution_id


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            workflows = ws_grpc.WorkflowServiceStub(channel)
            for source in (SLOW, QUICK, BROKEN, SAGA):
                await workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=source))
            yield Env(engine, es_grpc.ExecutionServiceStub(channel))
    finally:
        await server.stop(STOP_GRACE)
        await engine.stop(grace=0)


def name(execution_id: str) -> str:
    return f"executions/{execution_id}"


@dataclass
class Case:
    id: str
    # Brings an execution into the state; returns its id.
    setup: Callable[[Env], Awaitable[str]]
    call: Callable[[Env, str], Awaitable[Any]]
    state: str


CASES = [
    Case(
        "resume a running execution",
        lambda e: e.running(),
        lambda e, x: e.stub.ResumeExecution(es.ResumeExecutionRequest(name=name(x))),
        "RUNNING",
    ),
    Case(
        "pause a finished execution",
        lambda e: e.finished("quick"),
        lambda e, x: e.stub.PauseExecution(es.PauseExecutionRequest(name=name(x))),
        "SUCCEEDED",
    ),
    Case(
        "cancel a finished execution",
        lambda e: e.finished("quick"),
        lambda e, x: e.stub.CancelExecution(es.CancelExecutionRequest(name=name(x))),
        "SUCCEEDED",
    ),
    Case(
        "signal a finished execution",
        lambda e: e.finished("quick"),
        lambda e, x: e.stub.SignalExecution(es.SignalExecutionRequest(name=name(x), signal="go")),
        "SUCCEEDED",
    ),
    Case(
        "rerun a running execution",
        lambda e: e.running(),
        lambda e, x: e.stub.RerunExecution(es.RerunExecutionRequest(name=name(x))),
        "RUNNING",
    ),
    # More of the table: other final states, and the paused one.
    Case(
        "pause a paused execution",
        lambda e: e.paused(),
        lambda e, x: e.stub.PauseExecution(es.PauseExecutionRequest(name=name(x))),
        "PAUSED",
    ),
    Case(
        "rerun a paused execution",
        lambda e: e.paused(),
        lambda e, x: e.stub.RerunExecution(es.RerunExecutionRequest(name=name(x))),
        "PAUSED",
    ),
    Case(
        "resume a failed execution",
        lambda e: e.finished("broken"),
        lambda e, x: e.stub.ResumeExecution(es.ResumeExecutionRequest(name=name(x))),
        "FAILED",
    ),
    Case(
        "cancel with compensation a compensated execution",
        lambda e: e.finished("saga"),
        lambda e, x: e.stub.CancelExecution(
            es.CancelExecutionRequest(name=name(x), compensate=True)
        ),
        "COMPENSATED",
    ),
    Case(
        "signal a compensated execution",
        lambda e: e.finished("saga"),
        lambda e, x: e.stub.SignalExecution(es.SignalExecutionRequest(name=name(x), signal="go")),
        "COMPENSATED",
    ),
]


def _unpack(detail: Any, kind: Any) -> Any:
    if not detail.Is(kind.DESCRIPTOR):
        return None
    message = kind()
    detail.Unpack(message)
    return message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id.replace(" ", "-"))
async def test_illegal_transition(env: Env, case: Case) -> None:
    execution_id = await case.setup(env)
    before = await env.engine.get_execution(execution_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await case.call(env, execution_id)
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert case.state in error.details()

    status = rpc_status.from_call(error)
    assert status is not None
    infos = [i for i in (_unpack(d, error_details_pb2.ErrorInfo) for d in status.details) if i]
    assert [(i.reason, i.domain) for i in infos] == [("ILLEGAL_TRANSITION", "agentrun")]
    assert infos[0].metadata["current_state"] == case.state
    failures = [
        f for f in (_unpack(d, error_details_pb2.PreconditionFailure) for d in status.details) if f
    ]
    violations = [v for f in failures for v in f.violations]
    assert [v.type for v in violations] == ["STATE"]
    assert case.state in violations[0].description

    # The SDK turns it into IllegalTransition (a FailedPrecondition) naming the state.
    converted = sdk_errors.from_rpc_error(error)
    assert isinstance(converted, sdk_errors.IllegalTransition)
    assert converted.current_state == case.state

    # Refusing changed nothing.
    after = await env.engine.get_execution(execution_id)
    assert after.state is before.state
    if case.state in ("RUNNING", "PAUSED"):
        await env.engine.cancel(execution_id)
