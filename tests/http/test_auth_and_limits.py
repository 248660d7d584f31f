"""The same auth, limits and lifecycle over HTTP as over gRPC: API keys in HTTP headers, the
tenant they bind (shared with gRPC callers), per-key rate limits, the request size limit,
draining, deadlines, and a client that goes away releasing its watch."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from agentrun.client import AsyncClient
from tests.http.conftest import ConnectError, Served, _serve, envelope, stream, unary
from tests.server.conftest import ECHO_CHAIN

pytestmark = pytest.mark.timeout(60)

HOLD = "name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_api_keys(auth_served: Served) -> None:
    async with httpx.AsyncClient(base_url=auth_served.url) as http:
        with pytest.raises(ConnectError) as caught:
            await unary(http, "WorkflowService/ListWorkflows", {})
        assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
        assert caught.value.detail("google.rpc.ErrorInfo")["reason"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectError) as caught:
            await unary(http, "WorkflowService/ListWorkflows", {}, headers=bearer("wrong"))
        assert caught.value.code == "unauthenticated"
        assert caught.value.message == "unknown API key"
        # Streams too: the error is the stream's end.
        with pytest.raises(ConnectError) as caught:
            await stream(http, "ExecutionService/WatchExecution", {"name": "executions/x"})
        assert caught.value.code == "unauthenticated"
        # Both header forms; health needs no key.
        await unary(http, "WorkflowService/ListWorkflows", {}, headers=bearer("key-acme"))
        await unary(http, "WorkflowService/ListWorkflows", {}, headers={"x-api-key": "key-acme"})
        assert await unary(http, "/grpc.health.v1.Health/Check", {}) == {"status": "SERVING"}


async def test_tenants_are_shared_between_transports(auth_served: Served) -> None:
    async with (
        AsyncClient(auth_served.grpc_target, api_key="key-acme") as acme_grpc,
        httpx.AsyncClient(base_url=auth_served.url) as http,
    ):
        await acme_grpc.create_workflow(source=ECHO_CHAIN.format(name="mine"))
        got = await unary(
            http, "WorkflowService/GetWorkflow", {"name": "mine"}, headers=bearer("key-acme")
        )
        assert got["workflow"]["name"] == "workflows/mine"
        with pytest.raises(ConnectError) as caught:
            await unary(
                http, "WorkflowService/GetWorkflow", {"name": "mine"}, headers=bearer("key-globex")
            )
        assert caught.value.code == "not_found"
        listed = await unary(
            http, "WorkflowService/ListWorkflows", {}, headers=bearer("key-globex")
        )
        assert listed == {}


async def test_rate_limit_has_retry_info(auth_served: Served) -> None:
    # key-slow: 1 request/s, burst 2.
    async with httpx.AsyncClient(base_url=auth_served.url) as http:
        errors = []
        for _ in range(6):
            try:
                await unary(http, "WorkflowService/ListTools", {}, headers=bearer("key-slow"))
            except ConnectError as exc:
                errors.append(exc)
        assert errors, "six calls at once must go over 1/s with a burst of 2"
        error = errors[0]
        assert (error.status, error.code) == (429, "resource_exhausted")
        assert error.detail("google.rpc.ErrorInfo")["reason"] == "RATE_LIMITED"
        assert error.detail("google.rpc.RetryInfo")["retryDelay"].endswith("s")


async def test_request_size_limit() -> None:
    async for served in _serve(max_message_bytes=64 * 1024):
        async with httpx.AsyncClient(base_url=served.url) as http:
            big = {"source": ECHO_CHAIN.format(name="big") + "#" + "x" * 100_000}
            with pytest.raises(ConnectError) as caught:
                await unary(http, "WorkflowService/ValidateWorkflow", big)
            assert caught.value.code == "resource_exhausted"
            small = {"source": ECHO_CHAIN.format(name="small")}
            assert (await unary(http, "WorkflowService/ValidateWorkflow", small))["valid"]


async def test_deadline(served: Served, http: httpx.AsyncClient) -> None:
    await unary(http, "WorkflowService/CreateWorkflow", {"source": HOLD})
    started = await unary(http, "ExecutionService/StartExecution", {"workflow": "hold"})
    name = started["execution"]["name"]
    # The watch of a waiting execution does not end by itself: the deadline ends it.
    response = await http.post(
        "/agentrun.v1.ExecutionService/WatchExecution",
        content=envelope(json.dumps({"name": name}).encode()),
        headers={"content-type": "application/connect+json", "connect-timeout-ms": "300"},
    )
    *_, end = _frames(response.content)
    assert json.loads(end)["error"]["code"] == "deadline_exceeded"
    await _released(served, name.removeprefix("executions/"))


async def test_client_disconnect_releases_the_watch(
    served: Served, http: httpx.AsyncClient
) -> None:
    await unary(http, "WorkflowService/CreateWorkflow", {"source": HOLD})
    started = await unary(http, "ExecutionService/StartExecution", {"workflow": "hold"})
    name = started["execution"]["name"]
    ident = name.removeprefix("executions/")
    for _ in range(3):
        async with http.stream(
            "POST",
            "/agentrun.v1.ExecutionService/WatchExecution",
            content=envelope(json.dumps({"name": name}).encode()),
            headers={"content-type": "application/connect+json"},
        ) as response:
            seen = b""
            async for chunk in response.aiter_bytes():
                seen += chunk
                if b"execution.waiting" in seen:
                    break
            assert served.engine.hub._subs.get(ident)
        # Leaving the block closes the connection mid-stream.
    await _released(served, ident)


async def test_draining_refuses_new_calls_and_ends_watches() -> None:
    async for served in _serve():
        async with httpx.AsyncClient(base_url=served.url) as http:
            await unary(http, "WorkflowService/CreateWorkflow", {"source": HOLD})
            started = await unary(http, "ExecutionService/StartExecution", {"workflow": "hold"})
            name = started["execution"]["name"]
            watch = asyncio.create_task(
                stream(http, "ExecutionService/WatchExecution", {"name": name})
            )
            ident = name.removeprefix("executions/")
            for _ in range(500):
                if served.engine.hub._subs.get(ident):
                    break
                await asyncio.sleep(0.01)
            await served.grpc.drain()
            with pytest.raises(ConnectError) as caught:
                await asyncio.wait_for(watch, 20)
            assert caught.value.code == "unavailable"
            info = caught.value.detail("google.rpc.ErrorInfo")
            assert info["reason"] == "SHUTTING_DOWN"
            assert int(info["metadata"]["last_sequence"]) >= 1
            with pytest.raises(ConnectError) as caught:
                await unary(http, "WorkflowService/ListWorkflows", {})
            assert (caught.value.status, caught.value.code) == (503, "unavailable")
            # Health answers (NOT_SERVING) while draining, as over gRPC.
            health = await unary(http, "/grpc.health.v1.Health/Check", {})
            assert health == {"status": "NOT_SERVING"}
            async with grpc.aio.insecure_channel(served.grpc_target) as channel:
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                over_grpc = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest()
                )
                assert over_grpc.status == health_pb2.HealthCheckResponse.NOT_SERVING


def _frames(data: bytes) -> list[bytes]:
    from tests.http.conftest import read_envelopes

    return [payload for _, payload in read_envelopes(data)]


async def _released(served: Served, ident: str) -> None:
    for _ in range(500):
        if not served.engine.hub._subs.get(ident):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the watch's subscription was not released")


async def test_access_log(caplog: pytest.LogCaptureFixture) -> None:
    from tests.server.conftest import KEYS

    async for served in _serve(access_log=True, api_keys=KEYS):
        async with httpx.AsyncClient(base_url=served.url) as http:
            with caplog.at_level("INFO", logger="agentrun.server.access"):
                await unary(http, "WorkflowService/ListWorkflows", {}, headers=bearer("key-acme"))
                with pytest.raises(ConnectError):
                    await unary(http, "WorkflowService/GetWorkflow", {"name": "x"})
    lines = [r.getMessage() for r in caplog.records if r.name == "agentrun.server.access"]
    assert any(
        "/agentrun.v1.WorkflowService/ListWorkflows OK" in line
        and "tenant=acme" in line
        and "peer=ipv4:127.0.0.1:" in line
        for line in lines
    ), lines
    assert any("GetWorkflow UNAUTHENTICATED" in line for line in lines), lines
