"""`http.request` against local HTTP servers: requests, redirects, limits, and the SSRF corpus."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.integrations.tools import Guard, HttpRequest
from agentrun.integrations.tools.ssrf import Blocked, is_public
from agentrun.storage.records import ExecutionState

from .httpserver import HttpServer, Request, Response


def ctx(key: str = "ex1/node") -> CallContext:
    return CallContext(execution_id="ex1", node_id="node", attempt=1, idempotency_key=key)


async def app(request: Request) -> Response:
    if request.path == "/json":
        return Response.json({"hello": "world", "q": request.query})
    if request.path == "/echo":
        return Response.json(
            {"method": request.method, "body": request.json(), "headers": request.headers}
        )
    if request.path == "/redirect":
        return Response(302, b"", {"Location": "/json"})
    if request.path == "/big":
        return Response(200, b"x" * 5000, {"Content-Type": "text/plain"})
    if request.path == "/slow":
        await asyncio.sleep(2)
        return Response.json({})
    if request.path == "/limited":
        return Response.json({"error": "slow down"}, 429, {"Retry-After": "7"})
    if request.path == "/broken":
        return Response.json({"error": "boom"}, 500)
    return Response(404, b"nope")


@pytest.fixture
async def server():
    async with HttpServer(app) as srv:
        yield srv


@pytest.fixture
async def internal():
    """A server that must never be reached by a guarded request: it holds "secrets"."""

    async def handler(request: Request) -> Response:
        return Response.json({"secret": "internal data"})

    async with HttpServer(handler) as srv:
        yield srv


def tool_for(server: HttpServer, **config: Any) -> HttpRequest:
    return HttpRequest({"allow": [f"127.0.0.1:{server.port}"], **config})


async def test_get_json_with_params(server) -> None:
    result = await tool_for(server).call({"url": f"{server.url}/json", "params": {"a": 1}}, ctx())
    assert result["status"] == 200
    assert result["body"] == {"hello": "world", "q": {"a": ["1"]}}
    assert result["headers"]["content-type"] == "application/json"


async def test_post_json_sends_idempotency_key_and_host(server) -> None:
    result = await tool_for(server).call(
        {
            "method": "POST",
            "url": f"{server.url}/echo",
            "json": {"x": [1, 2]},
            "headers": {"X-Trace": "t1"},
        },
        ctx("ex9/charge/3"),
    )
    body = result["body"]
    assert body["method"] == "POST" and body["body"] == {"x": [1, 2]}
    assert body["headers"]["idempotency-key"] == "ex9/charge/3"
    assert body["headers"]["x-trace"] == "t1"
    assert body["headers"]["host"] == f"127.0.0.1:{server.port}"


async def test_redirect_is_followed(server) -> None:
    result = await tool_for(server).call({"url": f"{server.url}/redirect"}, ctx())
    assert result["status"] == 200 and result["body"]["hello"] == "world"
    assert [r.path for r in server.requests] == ["/redirect", "/json"]


async def test_response_size_limit(server) -> None:
    with pytest.raises(ToolFailure) as err:
        await tool_for(server, max_response_bytes=1000).call({"url": f"{server.url}/big"}, ctx())
    assert err.value.type == "tool_error" and err.value.details["reason"] == "response_too_large"
    ok = await tool_for(server, max_response_bytes=10_000).call({"url": f"{server.url}/big"}, ctx())
    assert len(ok["body"]) == 5000


async def test_timeout(server) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ToolFailure) as err:
        await tool_for(server).call({"url": f"{server.url}/slow", "timeout": 0.3}, ctx())
    assert err.value.type == "timeout"
    assert loop.time() - t0 < 2.0  # answered before the server did


async def test_status_errors(server) -> None:
    with pytest.raises(ToolFailure) as err:
        await tool_for(server).call({"url": f"{server.url}/limited"}, ctx())
    assert err.value.type == "rate_limited" and err.value.retry_after == 7
    with pytest.raises(ToolFailure) as err:
        await tool_for(server).call({"url": f"{server.url}/broken"}, ctx())
    assert err.value.type == "tool_error" and err.value.details["status"] == 500
    result = await tool_for(server).call(
        {"url": f"{server.url}/broken", "fail_on_status": False}, ctx()
    )
    assert result["status"] == 500 and result["body"] == {"error": "boom"}


async def test_in_a_workflow_with_config_allow_list(server, runner_factory) -> None:
    runner = await runner_factory(
        {"tools": {"http.request": {"allow": [f"127.0.0.1:{server.port}"]}}}
    )
    final, _ = await runner.run(
        'name: h\nnodes:\n  - {id: get, tool: {name: http.request, args: {url: "${{ input.url }}"}},'
        ' output: "${{ output.body.hello }}"}\n',
        {"url": f"{server.url}/json"},
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output == {"get": "world"}


# ------------------------------------------------------------------ the SSRF corpus
def corpus(internal: HttpServer, redirector: HttpServer) -> list[str]:
    p = internal.port
    return [
        f"http://127.0.0.1:{p}/",
        f"http://127.1:{p}/",
        f"http://2130706433:{p}/",
        f"http://0x7f000001:{p}/",
        f"http://0x7f.0.0.1:{p}/",
        f"http://0177.0.0.1:{p}/",
        f"http://017700000001:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::ffff:7f00:1]:{p}/",
        f"http://[::1]:{p}/",
        f"http://localhost:{p}/",
        f"http://0.0.0.0:{p}/",
        f"http://0:{p}/",
        f"HTTP://LOCALHOST:{p}/",
        f"http://example.com@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}#@example.com/",
        f"http://127.0.0.1:{p}\\@example.com/",
        f"http://localhost.:{p}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        f"{redirector.url}/to-loopback",
        f"{redirector.url}/to-loopback-decimal",
        f"{redirector.url}/to-metadata",
        f"{redirector.url}/to-file",
        f"{redirector.url}/chain",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_GET",
        "ftp://127.0.0.1/",
        "dict://127.0.0.1:11211/",
    ]


async def test_ssrf_corpus_is_fully_blocked(internal) -> None:
    p = internal.port

    async def redirects(request: Request) -> Response:
        target = {
            "/to-loopback": f"http://localhost:{p}/",
            "/to-loopback-decimal": f"http://2130706433:{p}/",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-file": "file:///etc/passwd",
            "/chain": "/to-loopback",
        }[request.path]
        return Response(302, b"", {"Location": target})

    async with HttpServer(redirects) as redirector:
        # The redirector itself is opened (by address and port); nothing else is.
        tool = HttpRequest({"allow": [f"127.0.0.1:{redirector.port}"], "timeout": 2})
        urls = corpus(internal, redirector)
        blocked = []
        for url in urls:
            try:
                await tool.call({"url": url}, ctx())
            except ToolFailure as exc:
                if exc.type in ("http.blocked", "invalid_args"):
                    blocked.append(url)
                else:
                    pytest.fail(f"{url}: failed as {exc.type}, not blocked: {exc.message}")
        assert blocked == urls, set(urls) - set(blocked)
        assert internal.requests == []
        # The redirector saw its redirect requests only (the chain hop included).
        assert sorted(r.path for r in redirector.requests) == sorted(
            [
                "/to-loopback",
                "/to-loopback-decimal",
                "/to-metadata",
                "/to-file",
                "/chain",
                "/to-loopback",
            ]
        )
    print(f"SSRF corpus: {len(blocked)}/{len(urls)} blocked")


async def test_allow_list_forms() -> None:
    guard = Guard(["127.0.0.1:8080", "10.0.0.0/8", "::1", "Orders.Internal"])
    assert (await guard.check("http", "127.0.0.1", 8080)).address == "127.0.0.1"
    with pytest.raises(Blocked):
        await guard.check("http", "127.0.0.1", 8081)
    assert (await guard.check("http", "10.1.2.3", None)).port == 80
    assert (await guard.check("https", "::1", None)).port == 443
    with pytest.raises(Blocked, match="scheme"):
        await guard.check("ftp", "10.1.2.3", None)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.1.1",
        "169.254.169.254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "192.0.2.1",
        "fe80::1",
        "ff02::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def make_cert(tmp_path, name: str) -> tuple[str, str]:
    import subprocess

    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_https_is_pinned_to_the_checked_address_and_verifies_the_host_name(tmp_path) -> None:
    """The request goes to the resolved address, while TLS still checks the certificate
    against the URL's host name (SNI)."""
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    good_cert, good_key = make_cert(tmp_path, "localhost")
    other_cert, _ = make_cert(tmp_path, "elsewhere.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(good_cert, good_key)
    async with HttpServer(app, ssl=context) as srv:
        url = f"https://localhost:{srv.port}/json"
        ok = await HttpRequest({"allow": [f"localhost:{srv.port}"], "ca_bundle": good_cert}).call(
            {"url": url}, ctx()
        )
        assert ok["body"]["hello"] == "world"
        assert srv.requests[0].headers["host"] == f"localhost:{srv.port}"
        with pytest.raises(ToolFailure) as err:  # a CA that did not sign this certificate
            await HttpRequest({"allow": [f"localhost:{srv.port}"], "ca_bundle": other_cert}).call(
                {"url": url}, ctx()
            )
        assert err.value.type == "tool_error" and "CERTIFICATE" in err.value.message.upper()
        with pytest.raises(ToolFailure) as err:  # not allow-listed: localhost is loopback
            await HttpRequest({"ca_bundle": good_cert}).call({"url": url}, ctx())
        assert err.value.type == "http.blocked"


@pytest.mark.parametrize(
    "headers", [{"X-A": "v\r\nX-Injected: 1"}, {"X-A": "v\nX"}, {"X-A\r\nX-B": "v"}, {"X A": "v"}]
)
async def test_header_injection_is_refused(server, headers) -> None:
    with pytest.raises(ToolFailure) as err:
        await tool_for(server).call({"url": f"{server.url}/json", "headers": headers}, ctx())
    assert err.value.type == "invalid_args" and err.value.details["field"].startswith(
        "args.headers."
    )
    assert server.requests == []
