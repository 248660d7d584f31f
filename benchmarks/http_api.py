"""HTTP port benchmark: the same unary calls over gRPC and over Connect JSON (what curl and the
web console send), at concurrency 1 and 10, against `agentrun serve --http-listen` in a child
process; and the time from StartExecution to the end of its WatchExecution stream over both.

    python benchmarks/http_api.py [--seconds 3]

Calls: GetWorkflow (a read through auth, limits and the servicer) and StartExecution (a
write). The load generator (grpc.aio, httpx with keep-alive) is this process, on the same
machine: the figures include the client's own Python cost (httpx's is several times
grpc.aio's), so they are a floor. For the server's own latency over HTTP, curl reusing one
connection: `curl -s -w '%{time_total}\n' -d '{"name":"one"}' -H 'Content-Type:
application/json' URL URL ...` (about 1.5 ms for GetWorkflow here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402

from agentrun.v1 import execution_service_pb2 as es  # noqa: E402
from agentrun.v1 import execution_service_pb2_grpc as es_grpc  # noqa: E402
from agentrun.v1 import workflow_service_pb2 as ws  # noqa: E402
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc  # noqa: E402

ONE_NODE = "name: one\nnodes:\n  - id: only\n    pass: {value: 1}\n"
Call = Callable[[], Awaitable[object]]


async def load(call: Call, concurrency: int, seconds: float) -> tuple[float, float]:
    """Calls per second and the median latency in ms."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3


async def run(grpc_target: str, http_url: str, seconds: float) -> None:
    async with (
        grpc.aio.insecure_channel(grpc_target) as channel,
        httpx.AsyncClient(base_url=http_url, limits=httpx.Limits(max_connections=20)) as http,
    ):
        workflows = ws_grpc.WorkflowServiceStub(channel)
        executions = es_grpc.ExecutionServiceStub(channel)
        await workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=ONE_NODE))

        async def post(method: str, body: dict) -> dict:
            response = await http.post(
                f"/agentrun.v1.{method}",
                content=json.dumps(body),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            return dict(response.json())

        calls: dict[str, dict[str, Call]] = {
            "GetWorkflow": {
                "grpc": lambda: workflows.GetWorkflow(ws.GetWorkflowRequest(name="one")),
                "connect": lambda: post("WorkflowService/GetWorkflow", {"name": "one"}),
            },
            "StartExecution": {
                "grpc": lambda: executions.StartExecution(
                    es.StartExecutionRequest(workflow="one")
                ),
                "connect": lambda: post("ExecutionService/StartExecution", {"workflow": "one"}),
            },
        }
        print(f"{'call':>15} {'transport':>9} {'conc':>4} {'calls/s':>9} {'p50 ms':>7}")
        for name, by_transport in calls.items():
            for transport, call in by_transport.items():
                for concurrency in (1, 10):
                    rate, p50 = await load(call, concurrency, seconds)
                    print(f"{name:>15} {transport:>9} {concurrency:>4} {rate:>9.0f} {p50:>7.2f}")

        async def watch_grpc() -> None:
            started = await executions.StartExecution(es.StartExecutionRequest(workflow="one"))
            request = es.WatchExecutionRequest(name=started.execution.name)
            async for _ in executions.WatchExecution(request):
                pass

        async def watch_connect() -> None:
            started = await post("ExecutionService/StartExecution", {"workflow": "one"})
            body = json.dumps({"name": started["execution"]["name"]}).encode()
            response = await http.post(
                "/agentrun.v1.ExecutionService/WatchExecution",
                content=struct.pack(">BI", 0, len(body)) + body,
                headers={"content-type": "application/connect+json"},
            )
            response.raise_for_status()

        for transport, call in (("grpc", watch_grpc), ("connect", watch_connect)):
            rate, p50 = await load(call, 1, seconds)
            print(f"{'start+watch':>15} {transport:>9} {1:>4} {rate:>9.0f} {p50:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from tests.server.subprocess_server import ServerProcess, free_port

    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    http_port = free_port()
    server = ServerProcess(
        workdir, args=["--log-level", "WARNING", "--http-listen", f"127.0.0.1:{http_port}"]
    ).start()
    try:
        asyncio.run(run(server.address, f"http://127.0.0.1:{http_port}", args.seconds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
