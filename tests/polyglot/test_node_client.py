"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader loading the .proto files) creates,
starts and watches an execution to its end against `agentrun serve` in a child process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.subprocess_server import ServerProcess

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(120)


def _node_ready() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (HERE / "node_modules" / "@grpc" / "grpc-js").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=300,
        )
    return node


@pytest.mark.parametrize("auth", [False, True], ids=["open", "api-key"])
def test_node_client_creates_starts_and_watches(tmp_path: Path, auth: bool) -> None:
    node = _node_ready()
    env = {"AGENTRUN_API_KEYS": "node-key:polyglot"} if auth else {}
    server = ServerProcess(tmp_path, env=env).start()
    try:
        args = [node, str(HERE / "client.js"), server.address] + (["node-key"] if auth else [])
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["state"] == "STATE_SUCCEEDED"
        assert summary["output"] == {"echo": {"said": "hello node"}}
        assert summary["sequences"] == list(range(1, len(summary["sequences"]) + 1))
        assert summary["types"][-1] == "execution.succeeded"
        if auth:
            denied = subprocess.run(
                [node, str(HERE / "client.js"), server.address],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    finally:
        server.stop()
