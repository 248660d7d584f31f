"""`agentrun serve --http-listen` in a real child process: the HTTP port comes up with the
gRPC one, answers curl, is off unless asked, and SIGTERM stops both with exit 0 (an open
watch over HTTP ends resumably rather than holding the shutdown)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from agentrun.server import ServerConfig
from tests.http.conftest import envelope, read_envelopes
from tests.server.subprocess_server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(90)

HOLD = "name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n"


def _post(url: str, method: str, body: dict) -> dict:
    response = httpx.post(
        f"{url}/agentrun.v1.{method}",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_serve_with_http(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(tmp_path, args=["--http-listen", f"127.0.0.1:{port}"]).start()
    try:
        # Bound before the store opens: ready when gRPC reports SERVING.
        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "-H",
                "Content-Type: application/json",
                "-d",
                "{}",
                f"{url}/grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            check=True,
            timeout=10,
        )
        assert json.loads(curl.stdout) == {"status": "SERVING"}
        _post(url, "WorkflowService/CreateWorkflow", {"source": HOLD})
        name = _post(url, "ExecutionService/StartExecution", {"workflow": "hold"})["execution"][
            "name"
        ]
        # A watch that would never end by itself, open while the server is told to stop.
        frames: list[tuple[int, bytes]] = []
        opened = threading.Event()

        def watch() -> None:
            body = b""
            with httpx.stream(
                "POST",
                f"{url}/agentrun.v1.ExecutionService/WatchExecution",
                content=envelope(json.dumps({"name": name}).encode()),
                headers={"content-type": "application/connect+json"},
                timeout=60,
            ) as response:
                for chunk in response.iter_bytes():
                    body += chunk
                    opened.set()
            frames.extend(read_envelopes(body))

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert opened.wait(30), "the watch sent nothing"
        assert server.terminate(timeout=30) == 0
        watcher.join(30)
        assert frames and frames[-1][0] == 2
        end = json.loads(frames[-1][1])
        assert end["error"]["code"] == "unavailable"
        log = server.log.read_text()
        assert f"http://127.0.0.1:{port}/" in log
    finally:
        server.stop()


def test_http_port_is_off_unless_asked(tmp_path: Path) -> None:
    assert ServerConfig.load(env={}).http_listen is None
    assert ServerConfig.load(env={"AGENTRUN_HTTP_LISTEN": "127.0.0.1:9"}).http_listen == (
        "127.0.0.1:9"
    )
    config = tmp_path / "agentrun.yaml"
    config.write_text("http_listen: 127.0.0.1:7\n")
    assert ServerConfig.load(config, env={}).http_listen == "127.0.0.1:7"
    assert ServerConfig.load(config, env={}, http_listen="127.0.0.1:8").http_listen == (
        "127.0.0.1:8"
    )


def test_busy_http_port_fails_before_the_store_opens(tmp_path: Path) -> None:
    import socket
    import sys

    from tests.server.subprocess_server import ROOT

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        db = tmp_path / "agentrun.db"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from agentrun.cli import main; sys.exit(main())",
                "serve",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--http-listen",
                f"127.0.0.1:{port}",
                "--db",
                f"sqlite:///{db}",
            ],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"127.0.0.1:{port} is already in use" in proc.stderr
    assert not db.exists()  # nothing was opened, let alone recovered
