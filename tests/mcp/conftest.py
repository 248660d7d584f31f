"""Fixtures for the MCP tests: the test MCP server (toolserver.py) over stdio and over
streamable HTTP in a child process, and engines whose registries take MCP tools from config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine
from tests.durability.common import wait_until
from tests.integrations.conftest import runner_factory  # noqa: F401 - a fixture for these tests

HERE = Path(__file__).resolve().parent
TOOLSERVER = HERE / "toolserver.py"


def stdio_server(**extra: Any) -> dict[str, Any]:
    """The config of the test server as a stdio subprocess."""
    return {"command": sys.executable, "args": [str(TOOLSERVER)], **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is gone for every purpose here
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


async def eventually(
    check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """`wait_until` for async tests: the event loop runs while it waits."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class HttpToolServer:
    """toolserver.py over streamable HTTP on a fixed port, so it can be killed and started
    again at the same URL."""

    def __init__(self, workdir: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = workdir / f"mcp-http-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HttpToolServer:
        args = [sys.executable, str(TOOLSERVER), "--http", f"127.0.0.1:{self.port}"]
        if self.token:
            args += ["--token", self.token]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        wait_until(self._listening, 30, f"the MCP HTTP server on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"MCP HTTP server exited: {self.log.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def http_server(tmp_path: Path) -> Any:
    servers: list[HttpToolServer] = []

    def make(token: str | None = None) -> HttpToolServer:
        server = HttpToolServer(tmp_path, token).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


async def kill_first_call(
    engine: Engine, spec_text: str, marker: Path, kill: Callable[[int], Any]
) -> tuple[str, int]:
    """Starts the workflow `spec_text`, whose node calls hang_once or consume_once on
    `marker`; once the first call hangs, `kill(pid)` kills its server. Returns the
    execution id and that pid."""
    from agentrun.engine import load_workflow

    spec = load_workflow(spec_text)
    await engine.create_workflow(spec)
    execution = await engine.start_execution(spec.name, None)
    pid = int(
        await eventually(lambda: marker.exists() and marker.read_text(), what="the first call")
    )
    kill(pid)
    return execution.id, pid
