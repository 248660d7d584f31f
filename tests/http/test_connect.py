"""The services over Connect JSON, as `curl -H 'Content-Type: application/json' -d ...` calls
them: unary calls to every service, server streams (Connect's streaming envelope), error codes
with their google.rpc details, binary protobuf and gRPC-Web."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct

import httpx
import pytest

from agentrun.v1 import workflow_service_pb2 as wpb
from tests.http.conftest import (
    APPROVAL,
    ORDER,
    ConnectError,
    Served,
    envelope,
    read_envelopes,
    stream,
    unary,
)
from tests.server.conftest import ECHO_CHAIN

pytestmark = pytest.mark.timeout(60)


async def test_workflow_service(http: httpx.AsyncClient) -> None:
    created = await unary(
        http, "WorkflowService/CreateWorkflow", {"source": ECHO_CHAIN.format(name="chain")}
    )
    workflow = created["workflow"]
    assert (workflow["name"], workflow["version"]) == ("workflows/chain", 1)
    got = await unary(http, "WorkflowService/GetWorkflow", {"name": "workflows/chain"})
    assert got["workflow"] == workflow
    listed = await unary(http, "WorkflowService/ListWorkflows", {"pageSize": 10})
    assert [w["name"] for w in listed["workflows"]] == ["workflows/chain"]
    checked = await unary(
        http, "WorkflowService/ValidateWorkflow", {"source": ECHO_CHAIN.format(name="v")}
    )
    assert checked["valid"] is True
    tools = await unary(http, "WorkflowService/ListTools", {})
    assert any(t["name"] == "core.sleep" for t in tools["tools"])
    await unary(http, "WorkflowService/DeleteWorkflow", {"name": "chain"})
    with pytest.raises(ConnectError) as caught:
        await unary(http, "WorkflowService/GetWorkflow", {"name": "chain"})
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.detail("google.rpc.ErrorInfo")["reason"] == "WORKFLOW_NOT_FOUND"


async def test_execution_service_and_watch_stream(http: httpx.AsyncClient) -> None:
    await unary(http, "WorkflowService/CreateWorkflow", {"source": APPROVAL})
    started = await unary(
        http, "ExecutionService/StartExecution", {"workflow": "approval", "input": {"n": 1}}
    )
    name = started["execution"]["name"]
    assert name.startswith("executions/")

    async def watch() -> list[dict]:
        return await stream(http, "ExecutionService/WatchExecution", {"name": name})

    watcher = asyncio.create_task(watch())
    # Wait for the execution to reach the signal wait, then approve it over HTTP.
    for _ in range(400):
        got = await unary(http, "ExecutionService/GetExecution", {"name": name})
        if got["execution"]["state"] == "STATE_WAITING":
            break
        await asyncio.sleep(0.025)
    assert got["execution"]["state"] == "STATE_WAITING"
    await unary(
        http,
        "ExecutionService/SignalExecution",
        {"name": name, "signal": "approve", "data": {"ok": True}, "signalId": "s1"},
    )
    events = await asyncio.wait_for(watcher, 30)
    sequences = [int(e["event"]["sequence"]) for e in events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert events[-1]["event"]["type"] == "execution.succeeded"
    done = await unary(http, "ExecutionService/GetExecution", {"name": name})
    assert done["execution"]["state"] == "STATE_SUCCEEDED"
    logged = await unary(http, "ExecutionService/ListExecutionEvents", {"parent": name})
    assert [e["sequence"] for e in logged["events"]] == [e["event"]["sequence"] for e in events]
    listed = await unary(http, "ExecutionService/ListExecutions", {})
    assert [e["name"] for e in listed["executions"]] == [name]
    trace = await unary(http, "ExecutionService/GetExecutionTrace", {"name": name})
    assert trace["trace"]


async def test_state_machine_service_and_watch_stream(http: httpx.AsyncClient) -> None:
    await unary(http, "WorkflowService/CreateWorkflow", {"source": ORDER})
    created = await unary(http, "StateMachineService/CreateInstance", {"workflow": "order"})
    name = created["instance"]["name"]
    available = await unary(http, "StateMachineService/GetAvailableEvents", {"name": name})
    assert (available["currentState"], available["events"]) == ("pending", ["CANCEL", "PAY"])
    pay = {"name": name, "event": "PAY", "data": {"amount": 3}}
    await unary(http, "StateMachineService/SendEvent", pay)
    await unary(http, "StateMachineService/SendEvent", {"name": name, "event": "SHIP"})
    got = await unary(http, "StateMachineService/GetInstance", {"name": name})
    assert got["instance"]["currentState"] == "shipped"
    history = await unary(http, "StateMachineService/ListInstanceHistory", {"parent": name})
    watched = await stream(http, "StateMachineService/WatchInstance", {"name": name})
    assert len(watched) == len(history["transitions"]) >= 2


async def test_invalid_argument_has_field_violations(http: httpx.AsyncClient) -> None:
    bad = {"name": "bad", "nodes": [{"id": "a", "needs": ["zz"]}]}
    with pytest.raises(ConnectError) as caught:
        await unary(http, "WorkflowService/CreateWorkflow", {"source": json.dumps(bad)})
    error = caught.value
    assert (error.status, error.code) == (400, "invalid_argument")
    assert error.detail("google.rpc.ErrorInfo") == {
        "reason": "INVALID_WORKFLOW",
        "domain": "agentrun",
        **({"metadata": m} if (m := error.detail("google.rpc.ErrorInfo").get("metadata")) else {}),
    }
    violations = error.detail("google.rpc.BadRequest")["fieldViolations"]
    assert any(v["field"].startswith("nodes[0]") for v in violations), violations


async def test_request_json_is_checked(http: httpx.AsyncClient) -> None:
    # A misspelt field names itself instead of being dropped; a wrong type too.
    with pytest.raises(ConnectError) as caught:
        await unary(http, "WorkflowService/ListWorkflows", {"pageSise": 3})
    assert caught.value.code == "invalid_argument"
    assert "pageSise" in caught.value.message
    with pytest.raises(ConnectError) as caught:
        await unary(http, "WorkflowService/ListWorkflows", {"pageSize": "many"})
    assert caught.value.code == "invalid_argument"
    assert "pageSize" in caught.value.message
    # The server's own checks, as over gRPC.
    with pytest.raises(ConnectError) as caught:
        await unary(http, "WorkflowService/ListWorkflows", {"pageSize": -1})
    assert caught.value.code == "invalid_argument"
    assert caught.value.detail("google.rpc.BadRequest")["fieldViolations"][0]["field"] == (
        "page_size"
    )


async def test_stream_errors_end_the_stream(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConnectError) as caught:
        await stream(http, "ExecutionService/WatchExecution", {"name": "executions/nope"})
    assert caught.value.code == "not_found"
    assert caught.value.detail("google.rpc.ErrorInfo")["reason"] == "EXECUTION_NOT_FOUND"
    with pytest.raises(ConnectError) as caught:
        await stream(
            http, "ExecutionService/WatchExecution", {"name": "executions/x", "afterSequence": -1}
        )
    assert caught.value.code == "invalid_argument"


async def test_binary_protobuf(http: httpx.AsyncClient) -> None:
    request = wpb.ValidateWorkflowRequest(source=ECHO_CHAIN.format(name="b"))
    response = await http.post(
        "/agentrun.v1.WorkflowService/ValidateWorkflow",
        content=request.SerializeToString(),
        headers={"content-type": "application/proto"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/proto"
    parsed = wpb.ValidateWorkflowResponse.FromString(response.content)
    assert parsed.valid


async def test_grpc_web(http: httpx.AsyncClient) -> None:
    request = wpb.GetWorkflowRequest(name="missing")
    response = await http.post(
        "/agentrun.v1.WorkflowService/GetWorkflow",
        content=envelope(request.SerializeToString()),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert response.status_code == 200
    # Trailers-only: the status in the headers, or in a trailer frame (flag 0x80).
    status = response.headers.get("grpc-status")
    if status is None:
        (_flags, trailer), *_ = [f for f in read_envelopes(response.content) if f[0] & 0x80]
        fields = dict(line.split(":", 1) for line in trailer.decode().strip().split("\r\n") if line)
        status = fields["grpc-status"].strip()
    assert status == "5"  # NOT_FOUND
    ok = await http.post(
        "/agentrun.v1.WorkflowService/ListTools",
        content=envelope(b""),
        headers={"content-type": "application/grpc-web+proto"},
    )
    frames = read_envelopes(ok.content)
    assert frames[0][0] == 0 and wpb.ListToolsResponse.FromString(frames[0][1]).tools
    assert b"grpc-status:0" in frames[-1][1].replace(b" ", b"")


async def test_plain_grpc_is_pointed_to_the_grpc_port(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/agentrun.v1.WorkflowService/ListTools",
        content=envelope(b""),
        headers={"content-type": "application/grpc"},
    )
    assert response.status_code == 415
    assert b"gRPC port" in response.content


async def test_unknown_method_and_health(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/agentrun.v1.WorkflowService/Nope", json={}, headers={"content-type": "application/json"}
    )
    assert response.status_code == 404
    health = await unary(http, "/grpc.health.v1.Health/Check", {})
    assert health == {"status": "SERVING"}


async def test_real_curl(served: Served) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (scripts/ensure-test-tools.sh installs it)")
    url = f"{served.url}/agentrun.v1.WorkflowService/ValidateWorkflow"
    body = json.dumps({"source": ECHO_CHAIN.format(name="c")})
    proc = await asyncio.create_subprocess_exec(
        curl,
        "-sS",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out) == {"valid": True, "stages": [{"nodeIds": ["a"]}, {"nodeIds": ["b"]}]}
    # An error: HTTP 404 with the Connect error JSON.
    proc = await asyncio.create_subprocess_exec(
        curl,
        "-sS",
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"name": "executions/none"}',
        f"{served.url}/agentrun.v1.ExecutionService/GetExecution",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text, code = out.decode().rsplit("\n", 1)
    assert code == "404"
    error = json.loads(text)
    assert error["code"] == "not_found"
    assert error["details"][0]["type"] == "google.rpc.ErrorInfo"
    assert error["details"][0]["debug"]["reason"] == "EXECUTION_NOT_FOUND"


def test_envelope_helper() -> None:
    assert read_envelopes(envelope(b"ab") + envelope(b"{}", 2)) == [(0, b"ab"), (2, b"{}")]
    assert struct.unpack(">BI", envelope(b"x")[:5]) == (0, 1)


async def test_connections_send_without_delay(served: Served, http: httpx.AsyncClient) -> None:
    """Nagle is off on the port's connections (else each keep-alive call waits for the
    client's delayed ACK, ~40 ms)."""
    import socket

    await unary(http, "WorkflowService/ListTools", {})
    uvicorn_server = served.http._uvicorn
    assert uvicorn_server is not None
    connections = list(uvicorn_server.server_state.connections)
    assert connections
    for protocol in connections:
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_start_execution_waits_over_connect(http: httpx.AsyncClient) -> None:
    """`wait` and `wait_timeout` (a JSON duration string) come from the proto: the final
    execution when it ends in time, the waiting one past the deadline, and INVALID_ARGUMENT
    naming `wait_timeout` for a bad one."""
    await unary(http, "WorkflowService/CreateWorkflow", {"source": ECHO_CHAIN.format(name="c")})
    await unary(http, "WorkflowService/CreateWorkflow", {"source": APPROVAL})
    done = await unary(
        http,
        "ExecutionService/StartExecution",
        {"workflow": "c", "wait": True, "waitTimeout": "10s"},
    )
    assert done["execution"]["state"] == "STATE_SUCCEEDED"
    waiting = await unary(
        http,
        "ExecutionService/StartExecution",
        {"workflow": "approval", "input": {"n": 1}, "wait": True, "waitTimeout": "0.2s"},
    )
    assert waiting["execution"]["state"] == "STATE_WAITING"
    with pytest.raises(ConnectError) as caught:
        await unary(
            http,
            "ExecutionService/StartExecution",
            {"workflow": "c", "wait": True, "waitTimeout": "-1s"},
        )
    assert (caught.value.status, caught.value.code) == (400, "invalid_argument")
    assert "wait_timeout" in caught.value.message
