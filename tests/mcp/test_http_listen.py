"""`agentrun mcp --http`: the port is listening when the line naming it is printed, so a client
that connects as soon as it reads the line is never refused (it was, on a busy machine: the
line came before uvicorn bound the socket); a port already taken is said in one line."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from agentrun.cli import EXIT_FAILED
from agentrun.cli import mcp as mcp_cli


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least ASGI app uvicorn starts with lifespan on."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _gateway() -> Any:
    return SimpleNamespace(server=SimpleNamespace(streamable_http_app=lambda host: _app))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_port_listens_before_the_line_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    answers: list[int] = []

    class Stderr(io.StringIO):
        def write(self, text: str) -> int:
            if "tools at http://" in text:  # what a waiting script reads: connect right now
                with socket.socket() as probe:
                    answers.append(probe.connect_ex(("127.0.0.1", port)))
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Stderr())
    serving = asyncio.create_task(mcp_cli._http(_gateway(), "127.0.0.1", port, offered=1))
    try:
        for _ in range(2000):
            if answers or serving.done():
                break
            await asyncio.sleep(0.01)
        assert answers == [0], answers  # 0: connected (ECONNREFUSED before the fix)
    finally:
        serving.cancel()
        with pytest.raises((asyncio.CancelledError, SystemExit, KeyboardInterrupt)):
            await serving


async def test_a_port_taken_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = await asyncio.wait_for(mcp_cli._http(_gateway(), "127.0.0.1", port, offered=1), 30)
    assert code == EXIT_FAILED
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
