"""Calls over HTTP are traced and counted by the gRPC server's telemetry interceptor: a span
per call that continues the caller's `traceparent` header, the execution's spans under it, and
the RPC metrics by method and status code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from agentrun.server.http.server import HttpServer
from tests.http.conftest import ConnectError, unary
from tests.observability.conftest import Stack, make_stack
from tests.observability.test_metrics import counted, scrape
from tests.server.conftest import STOP_GRACE

pytestmark = pytest.mark.timeout(60)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
ONE = "name: one\nnodes:\n  - id: a\n    pass: {value: 1}\n"


@pytest.fixture
async def traced() -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    stack = await make_stack()
    http = HttpServer(stack.server)
    await http.start("127.0.0.1:0")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            yield stack, client
    finally:
        await http.stop(0)
        await stack.client.close()
        await stack.server.stop(STOP_GRACE)
        await stack.engine.stop(grace=0)
        stack.observability.close()


async def test_http_calls_are_traced_and_counted(
    traced: tuple[Stack, httpx.AsyncClient],
) -> None:
    stack, http = traced
    await unary(http, "WorkflowService/CreateWorkflow", {"source": ONE})
    started = await unary(
        http,
        "ExecutionService/StartExecution",
        {"workflow": "one"},
        headers={"traceparent": CALLER_TRACEPARENT},
    )
    ident = started["execution"]["name"].removeprefix("executions/")
    await stack.engine.wait(ident, timeout=10)
    with pytest.raises(ConnectError):
        await unary(http, "WorkflowService/GetWorkflow", {"name": "missing"})

    spans = stack.exporter.get_finished_spans()
    [rpc] = [s for s in spans if s.name == "agentrun.v1.ExecutionService/StartExecution"]
    assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
    executions = [s for s in spans if s.name.startswith("execution ")]
    assert executions and all(f"{s.context.trace_id:032x}" == CALLER_TRACE for s in executions)
    families = await scrape(stack, until=counted("GetWorkflow", "NOT_FOUND"))
    samples = families["agentrun_rpc_requests"].samples
    assert any(
        s.labels.get("method") == "StartExecution" and s.labels.get("code") == "OK" for s in samples
    )
    assert any(
        s.labels.get("method") == "GetWorkflow" and s.labels.get("code") == "NOT_FOUND"
        for s in samples
    )
