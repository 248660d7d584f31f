"""ListWorkers over the HTTP port (Connect JSON, as curl sends it), against `agentrun serve
--http-listen` with a Python worker connected to its gRPC port; Connect itself (a client
stream) is served on the gRPC port only."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest

from agentrun.worker import Worker
from tests.server.subprocess_server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(90)


def test_list_workers_over_connect_json(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(tmp_path, args=["--http-listen", f"127.0.0.1:{port}"]).start()
    worker = Worker(
        server.address, max_concurrent_calls=2, labels={"zone": "z1"}, display_name="http-test"
    )
    worker.tool("http.probe.echo")(lambda args: args)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=lambda: loop.run_until_complete(worker.run()), daemon=True)
    runner.start()
    try:
        asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(worker.connected.wait(), 20), loop
        ).result(30)
        response = httpx.post(
            f"{url}/agentrun.v1.WorkerService/ListWorkers",
            content=json.dumps({"filter": 'tool = "http.probe.echo"'}),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        (listed,) = response.json()["workers"]
        assert listed["displayName"] == "http-test" and listed["labels"] == {"zone": "z1"}
        assert listed["state"] == "STATE_SERVING" and listed["maxConcurrentCalls"] == 2
        assert [t["name"] for t in listed["tools"]] == ["http.probe.echo"]
        refused = httpx.post(
            f"{url}/agentrun.v1.WorkerService/Connect",
            content=b"{}",
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert refused.status_code == 404, refused.text  # no client streams over HTTP/1.1
    finally:
        loop.call_soon_threadsafe(worker.stop)
        runner.join(10)
        server.stop()
