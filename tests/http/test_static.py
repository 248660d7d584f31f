"""The console's files at `/` of the HTTP port: index.html for `/` and for the app's own
routes, assets with their content types and cache headers, ETag revalidation, no escape from
the directory, and RPC paths never shadowed by files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentrun.server.http.server import HttpServer
from agentrun.server.http.static import IMMUTABLE, StaticFiles
from tests.http.conftest import Served

pytestmark = pytest.mark.timeout(60)

INDEX = b"<!doctype html><title>agentrun</title><div id=app></div>"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "app-3f2a.js").write_text("console.log('hi')")
    (root / "assets" / "app-3f2a.css").write_text("body{}")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("no")
    return root


@pytest.fixture
async def console(served: Served, site: Path) -> AsyncIterator[httpx.AsyncClient]:
    http = HttpServer(served.grpc, console=StaticFiles(site))
    await http.start("127.0.0.1:0")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            yield client
    finally:
        await http.stop(0)


async def test_index_and_app_routes(console: httpx.AsyncClient) -> None:
    for path in ("/", "/executions", "/executions/01abc", "/workflows/x/versions/2"):
        response = await console.get(path)
        assert response.status_code == 200, path
        assert response.content == INDEX
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"


async def test_assets(console: httpx.AsyncClient) -> None:
    js = await console.get("/assets/app-3f2a.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["cache-control"] == IMMUTABLE
    css = await console.get("/assets/app-3f2a.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    icon = await console.get("/favicon.svg")
    assert (icon.headers["content-type"], icon.headers["cache-control"]) == (
        "image/svg+xml",
        "no-cache",
    )
    head = await console.head("/assets/app-3f2a.js")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(js.content))


async def test_text_goes_gzipped(console: httpx.AsyncClient, site: Path) -> None:
    script = "console.log('agentrun');\n" * 400
    (site / "assets" / "big-1a2b.js").write_text(script)
    plain = await console.get("/assets/big-1a2b.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == script
    packed = await console.get("/assets/big-1a2b.js", headers={"accept-encoding": "gzip, br"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(script) // 10
    assert packed.text == script  # httpx decodes it
    assert packed.headers["vary"] == "accept-encoding"
    assert packed.headers["etag"] != plain.headers["etag"]
    again = await console.get(
        "/assets/big-1a2b.js",
        headers={"accept-encoding": "gzip", "if-none-match": packed.headers["etag"]},
    )
    assert again.status_code == 304


async def test_etag_revalidation(console: httpx.AsyncClient, site: Path) -> None:
    first = await console.get("/")
    etag = first.headers["etag"]
    again = await console.get("/", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    (site / "index.html").write_bytes(INDEX + b"<!-- v2 -->")
    changed = await console.get("/", headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_missing_files_and_escapes(console: httpx.AsyncClient) -> None:
    assert (await console.get("/assets/gone.js")).status_code == 404
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt"):
        response = await console.get(path)
        assert b"no" != response.content
        assert response.status_code in (200, 404)  # 200: the index, never the file
    assert (await console.post("/", content=b"x")).status_code == 405


async def test_rpc_paths_are_not_files(console: httpx.AsyncClient) -> None:
    response = await console.post(
        "/agentrun.v1.WorkflowService/ListTools",
        json={},
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200 and "tools" in response.json()


async def test_console_not_built(served: Served, tmp_path: Path) -> None:
    http = HttpServer(served.grpc, console=StaticFiles(tmp_path / "empty"))
    await http.start("127.0.0.1:0")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            response = await client.get("/")
        assert response.status_code == 404
        assert b"console is not built" in response.content
    finally:
        await http.stop(0)
