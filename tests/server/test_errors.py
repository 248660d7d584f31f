"""Table-driven: every error path's status code, ErrorInfo reason and details on the wire,
and the SDK exception each becomes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.client import errors as sdk_errors
from agentrun.server import AgentrunServer
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc
from tests.server.conftest import ECHO_CHAIN, KEYS, STOP_GRACE

pytestmark = pytest.mark.timeout(60)

WAITER = """
name: waiter
input_schema:
  type: object
  required: [n]
  properties: {n: {type: integer}}
nodes:
  - id: hold
    wait: {signal: go}
"""


@dataclass
class Stubs:
    workflows: ws_grpc.WorkflowServiceStub
    executions: es_grpc.ExecutionServiceStub
    key: str | None

    def md(self, key: str | None = ...) -> tuple[tuple[str, str], ...]:  # type: ignore[assignment]
        key = self.key if key is ... else key
        return (("authorization", f"Bearer {key}"),) if key else ()


async def _waiting_execution(s: Stubs) -> str:
    await s.workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=WAITER), metadata=s.md())
    started = await s.executions.StartExecution(
        es.StartExecutionRequest(workflow="workflows/waiter", input=_value({"n": 1})),
        metadata=s.md(),
    )
    return started.execution.name


def _value(obj: Any) -> Any:
    from agentrun.server.convert import to_value

    return to_value(obj)


async def invalid_workflow_source(s: Stubs) -> None:
    bad = "name: bad\nnodes:\n  - id: a\n    pass: {}\n    needs: [nope]\n  - id: a\n    pass: {}\n"
    await s.workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=bad), metadata=s.md())


async def invalid_workflow_typed(s: Stubs) -> None:
    request = ws.CreateWorkflowRequest()
    request.spec.name = "cyclic"
    a = request.spec.nodes.add(id="a", needs=["b"])
    a.pass_node.SetInParent()
    b = request.spec.nodes.add(id="b", needs=["a"])
    b.pass_node.SetInParent()
    await s.workflows.CreateWorkflow(request, metadata=s.md())


async def invalid_input(s: Stubs) -> None:
    await s.workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=WAITER), metadata=s.md())
    await s.executions.StartExecution(
        es.StartExecutionRequest(workflow="workflows/waiter", input=_value({"n": "x"})),
        metadata=s.md(),
    )


async def malformed_name(s: Stubs) -> None:
    await s.executions.GetExecution(es.GetExecutionRequest(name="executions/a/b"), metadata=s.md())


async def bad_page_token(s: Stubs) -> None:
    await s.workflows.ListWorkflows(ws.ListWorkflowsRequest(page_token="garbage"), metadata=s.md())


async def unknown_workflow(s: Stubs) -> None:
    await s.workflows.GetWorkflow(ws.GetWorkflowRequest(name="workflows/nope"), metadata=s.md())


async def start_unknown_workflow(s: Stubs) -> None:
    await s.executions.StartExecution(
        es.StartExecutionRequest(workflow="workflows/nope"), metadata=s.md()
    )


async def unknown_execution(s: Stubs) -> None:
    await s.executions.GetExecution(es.GetExecutionRequest(name="executions/nope"), metadata=s.md())


async def illegal_transition(s: Stubs) -> None:
    name = await _waiting_execution(s)
    await s.executions.ResumeExecution(es.ResumeExecutionRequest(name=name), metadata=s.md())


async def duplicate_request_id(s: Stubs) -> None:
    await s.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(source=ECHO_CHAIN.format(name="dup")), metadata=s.md()
    )
    for n in (1, 2):
        await s.executions.StartExecution(
            es.StartExecutionRequest(workflow="dup", input=_value({"n": n}), request_id="same"),
            metadata=s.md(),
        )


async def duplicate_workflow_request_id(s: Stubs) -> None:
    for name in ("d1", "d2"):
        await s.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(source=ECHO_CHAIN.format(name=name), request_id="same"),
            metadata=s.md(),
        )


async def no_key(s: Stubs) -> None:
    await s.workflows.ListWorkflows(ws.ListWorkflowsRequest(), metadata=s.md(None))


async def unknown_key(s: Stubs) -> None:
    await s.workflows.ListWorkflows(ws.ListWorkflowsRequest(), metadata=s.md("wrong"))


async def other_tenant(s: Stubs) -> None:
    name = await _waiting_execution(s)  # as acme
    await s.executions.GetExecution(es.GetExecutionRequest(name=name), metadata=s.md("key-globex"))


async def other_tenant_workflow(s: Stubs) -> None:
    await s.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(source=ECHO_CHAIN.format(name="mine")), metadata=s.md()
    )
    await s.executions.StartExecution(
        es.StartExecutionRequest(workflow="mine"), metadata=s.md("key-globex")
    )


async def rate_limited(s: Stubs) -> None:
    for _ in range(5):
        await s.workflows.ListWorkflows(ws.ListWorkflowsRequest(), metadata=s.md("key-slow"))


async def oversize(s: Stubs) -> None:
    await s.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(source="#" * (2 * 1024 * 1024)), metadata=s.md()
    )


@dataclass
class Case:
    call: Callable[[Stubs], Awaitable[None]]
    code: grpc.StatusCode
    reason: str | None  # None: no ErrorInfo (grpc core rejected the call)
    sdk: type[Exception]
    auth: bool = False
    detail: str | None = None  # "violations", "precondition", "retry"


CASES = [
    Case(
        invalid_workflow_source,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_WORKFLOW",
        sdk_errors.InvalidWorkflow,
        detail="violations",
    ),
    Case(
        invalid_workflow_typed,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_WORKFLOW",
        sdk_errors.InvalidWorkflow,
        detail="violations",
    ),
    Case(
        invalid_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_INPUT",
        sdk_errors.InvalidInput,
        detail="violations",
    ),
    Case(
        malformed_name,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        sdk_errors.InvalidArgument,
        detail="violations",
    ),
    Case(
        bad_page_token,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        sdk_errors.InvalidArgument,
        detail="violations",
    ),
    Case(
        unknown_workflow,
        grpc.StatusCode.NOT_FOUND,
        "WORKFLOW_NOT_FOUND",
        sdk_errors.WorkflowNotFound,
    ),
    Case(
        start_unknown_workflow,
        grpc.StatusCode.NOT_FOUND,
        "WORKFLOW_NOT_FOUND",
        sdk_errors.WorkflowNotFound,
    ),
    Case(
        unknown_execution,
        grpc.StatusCode.NOT_FOUND,
        "EXECUTION_NOT_FOUND",
        sdk_errors.ExecutionNotFound,
    ),
    Case(
        illegal_transition,
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
        sdk_errors.IllegalTransition,
        detail="precondition",
    ),
    Case(
        duplicate_request_id,
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        sdk_errors.AlreadyExists,
    ),
    Case(
        duplicate_workflow_request_id,
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        sdk_errors.AlreadyExists,
    ),
    Case(
        no_key,
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        sdk_errors.Unauthenticated,
        auth=True,
    ),
    Case(
        unknown_key,
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        sdk_errors.Unauthenticated,
        auth=True,
    ),
    Case(
        other_tenant,
        grpc.StatusCode.NOT_FOUND,
        "EXECUTION_NOT_FOUND",
        sdk_errors.ExecutionNotFound,
        auth=True,
    ),
    Case(
        other_tenant_workflow,
        grpc.StatusCode.NOT_FOUND,
        "WORKFLOW_NOT_FOUND",
        sdk_errors.WorkflowNotFound,
        auth=True,
    ),
    Case(
        rate_limited,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        sdk_errors.RateLimited,
        auth=True,
        detail="retry",
    ),
    Case(
        oversize, grpc.StatusCode.RESOURCE_EXHAUSTED, None, sdk_errors.ResourceExhausted, auth=True
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.call.__name__)
async def test_error_paths(case: Case, server: AgentrunServer, auth_server: AgentrunServer) -> None:
    target = auth_server if case.auth else server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{target.port}") as channel:
        stubs = Stubs(
            ws_grpc.WorkflowServiceStub(channel),
            es_grpc.ExecutionServiceStub(channel),
            "key-acme" if case.auth else None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await case.call(stubs)
    error = caught.value
    assert error.code() == case.code, error.details()
    status = rpc_status.from_call(error)
    if case.reason is None:
        assert status is None
    else:
        assert status is not None
        infos = [_unpack(d, error_details_pb2.ErrorInfo) for d in status.details]
        infos = [i for i in infos if i is not None]
        assert [(i.reason, i.domain) for i in infos] == [(case.reason, "agentrun")]
        if case.detail == "violations":
            bad = [_unpack(d, error_details_pb2.BadRequest) for d in status.details]
            violations = [v for b in bad if b for v in b.field_violations]
            assert violations and all(v.description for v in violations)
        if case.detail == "precondition":
            assert any(_unpack(d, error_details_pb2.PreconditionFailure) for d in status.details)
        if case.detail == "retry":
            retry = [_unpack(d, error_details_pb2.RetryInfo) for d in status.details]
            assert any(r and r.retry_delay.ToNanoseconds() > 0 for r in retry)
    converted = sdk_errors.from_rpc_error(error)
    assert type(converted) is case.sdk
    if case.detail == "retry":
        assert converted.retry_after and converted.retry_after > 0


def _unpack(detail: Any, kind: Any) -> Any:
    if not detail.Is(kind.DESCRIPTOR):
        return None
    message = kind()
    detail.Unpack(message)
    return message


async def test_invalid_workflow_paths_match_validator(server: AgentrunServer) -> None:
    """The field violations are the paths ValidateWorkflow reports."""
    bad = "name: bad\nnodes:\n  - id: a\n    pass: {}\n    needs: [nope]\n"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = ws_grpc.WorkflowServiceStub(channel)
        validated = await stub.ValidateWorkflow(ws.ValidateWorkflowRequest(source=bad))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateWorkflow(ws.CreateWorkflowRequest(source=bad))
    status = rpc_status.from_call(caught.value)
    bad_request = [_unpack(d, error_details_pb2.BadRequest) for d in status.details]
    fields = sorted(v.field for b in bad_request if b for v in b.field_violations)
    assert fields == sorted(d.field for d in validated.errors)
    assert not validated.valid


async def test_draining_refuses_new_work(server: AgentrunServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agentrun.v1.ExecutionService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        await server.drain()
        for service in ("", "agentrun.v1.ExecutionService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ws_grpc.WorkflowServiceStub(channel).ListWorkflows(ws.ListWorkflowsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert type(sdk_errors.from_rpc_error(caught.value)) is sdk_errors.ShuttingDown


async def test_tenants_are_isolated(auth_server: AgentrunServer) -> None:
    from agentrun.client import AsyncClient

    target = f"127.0.0.1:{auth_server.port}"
    async with (
        AsyncClient(target, api_key="key-acme") as acme,
        AsyncClient(target, api_key="key-globex") as globex,
    ):
        await acme.create_workflow(source=ECHO_CHAIN.format(name="secret"))
        await globex.create_workflow(source=ECHO_CHAIN.format(name="public"))
        assert [w.name async for w in acme.list_workflows()] == ["secret"]
        assert [w.name async for w in globex.list_workflows()] == ["public"]
        execution = await acme.start_execution("secret", {})
        assert [x.id async for x in globex.list_executions()] == []
        with pytest.raises(sdk_errors.ExecutionNotFound):
            await globex.cancel_execution(execution.id)
        with pytest.raises(sdk_errors.ExecutionNotFound):
            async for _ in globex.watch(execution):
                pass
        await asyncio.wait_for(acme.wait(execution), 10)


async def test_health_needs_no_key_but_reflection_does(auth_server: AgentrunServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")

        async def ask(metadata: tuple) -> list[str]:
            call = stub.ServerReflectionInfo(iter([request]), metadata=metadata)
            names = []
            async for response in call:
                names += [s.name for s in response.list_services_response.service]
            return names

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ask(())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "agentrun.v1.ExecutionService" in await ask((("authorization", "Bearer key-acme"),))


async def test_access_log(engine, caplog: pytest.LogCaptureFixture) -> None:
    from agentrun.server import ServerConfig

    server = AgentrunServer(engine, ServerConfig.load(env={}, access_log=True, api_keys=KEYS))
    await server.start("127.0.0.1:0")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "agentrun.server.access"]

    # The server writes a call's line after its answer is sent: the client may see the answer
    # first, so the test waits for the lines (and keeps the level) until both are there.
    with caplog.at_level("INFO", logger="agentrun.server.access"):
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = ws_grpc.WorkflowServiceStub(channel)
                await stub.ListWorkflows(
                    ws.ListWorkflowsRequest(), metadata=(("authorization", "Bearer key-acme"),)
                )
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.GetWorkflow(ws.GetWorkflowRequest(name="nope"))
            for _ in range(300):
                if any("GetWorkflow" in line for line in lines()):
                    break
                await asyncio.sleep(0.05)
        finally:
            await server.stop(STOP_GRACE)
    logged = lines()
    assert any("ListWorkflows OK" in line and "tenant=acme" in line for line in logged), logged
    assert any("GetWorkflow UNAUTHENTICATED" in line for line in logged), logged
