"""Remote workers benchmark: a no-op tool served by worker processes, against the same tool
in the server's process and a bare gRPC round trip.

    python benchmarks/workers.py [--db URL] [--calls 200] [--items 1000]

`agentrun serve` runs in a child process (SQLite in a temp dir unless --db names one), the
workers are child processes of this one (the Python library, `agentrun.worker`, 4 slots
each), and this process is the client. Rows:

- round trip: a 1-node workflow run `--calls` times one after another; the figure is the
  node's own duration (attempt start to its commit, from the stored node times), p50 and
  p99 in microseconds: for a remote tool that is the store round trips (the call row, its
  lease, the answer) plus two stream messages;
- calls/s: one execution mapping `--items` items over the tool (no concurrency bound), with 1
  and 4 workers: items / the map node's duration;
- gRPC floor: a unary GetWorkflow from this process, the least a call to the server costs.

All processes share this machine's cores: figures are a floor for separate machines, and
move with the machine's load (printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Keep this directory off the path (benchmarks/grpc.py would shadow grpcio).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from agentrun.client import Client  # noqa: E402
from agentrun.v1 import workflow_service_pb2 as ws  # noqa: E402
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc  # noqa: E402
from tests.server.subprocess_server import ServerProcess  # noqa: E402

WORKER = """
import sys
from agentrun.worker import Worker
worker = Worker(sys.argv[1], max_concurrent_calls=4, display_name="bench")
worker.tool("bench.noop", idempotent=True)(lambda args: args)
worker.run_forever()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def node_seconds(client: Client, execution_id: str) -> float:
    (node,) = client.get_execution(execution_id, include_nodes=True).nodes[:1]
    assert node.start_time is not None and node.end_time is not None, node
    return (node.end_time - node.start_time).total_seconds()


def round_trips(client: Client, workflow: str, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        final = client.wait(client.start_execution(workflow, {"x": 1}), timeout=60)
        assert final.state.name == "SUCCEEDED", final.error
        out.append(node_seconds(client, final.id))
    return out


def throughput(client: Client, workflow: str, items: int) -> float:
    final = client.wait(client.start_execution(workflow, {"items": list(range(items))}), timeout=600)
    assert final.state.name == "SUCCEEDED", final.error
    return items / node_seconds(client, final.id)


def grpc_floor(address: str, calls: int) -> list[float]:
    with grpc.insecure_channel(address) as channel:
        stub = ws_grpc.WorkflowServiceStub(channel)
        request = ws.GetWorkflowRequest(name="workflows/one-remote")
        stub.GetWorkflow(request)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            stub.GetWorkflow(request)
            out.append(time.perf_counter() - t0)
        return out


def start_worker(address: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WORKER, address], env=env, stderr=subprocess.DEVNULL)


def wait_for_workers(client: Client, count: int) -> None:
    from agentrun.v1 import worker_service_pb2 as pb
    from agentrun.v1 import worker_service_pb2_grpc as pb_grpc

    stub = pb_grpc.WorkerServiceStub(client.channel)
    deadline = time.monotonic() + 60
    while len(stub.ListWorkers(pb.ListWorkersRequest()).workers) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not connect")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-workers-"))
    (workdir / "config.yaml").write_text("workers: {heartbeat: 1s, lease: 5s, poll: 200ms}\n")
    server = ServerProcess(workdir, db=args.db, args=["--config", str(workdir / "config.yaml")],
                           env={"AGENTRUN_ACCESS_LOG": "0"}).start()
    workers: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, str]] = []
    try:
        with Client(server.address, api_key="") as client:
            workers.append(start_worker(server.address))
            wait_for_workers(client, 1)
            for name, tool in (("remote", "bench.noop"), ("local", "core.echo")):
                client.create_workflow(source=f"name: one-{name}\nnodes:\n  - {{id: t, tool: {{name: {tool}, args: {{x: 1}}}}}}\n")
                client.create_workflow(source=(
                    f"name: map-{name}\nnodes:\n  - id: m\n    map:\n      items: \"${{{{ input.items }}}}\"\n"
                    f"      node: {{tool: {{name: {tool}, args: {{i: \"${{{{ item }}}}\"}}}}}}\n"
                ))
            round_trips(client, "one-remote", 10)  # warm up
            round_trips(client, "one-local", 10)
            for label, workflow in (("remote tool (1 worker)", "one-remote"), ("in-process tool", "one-local")):
                times = round_trips(client, workflow, args.calls)
                rows.append((f"round trip, {label}", f"p50 {pct(times, 0.5) * 1e6:9.0f} µs   p99 {pct(times, 0.99) * 1e6:9.0f} µs"))
            floor = grpc_floor(server.address, args.calls)
            rows.append(("gRPC floor (unary GetWorkflow)", f"p50 {pct(floor, 0.5) * 1e6:9.0f} µs   p99 {pct(floor, 0.99) * 1e6:9.0f} µs"))
            rows.append(("calls/s, remote tool, 1 worker x 4 slots", f"{throughput(client, 'map-remote', args.items):9.0f}"))
            workers += [start_worker(server.address) for _ in range(3)]
            wait_for_workers(client, 4)
            rows.append(("calls/s, remote tool, 4 workers x 4 slots", f"{throughput(client, 'map-remote', args.items):9.0f}"))
            rows.append(("calls/s, in-process tool", f"{throughput(client, 'map-local', args.items):9.0f}"))
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.stop()
    width = max(len(r[0]) for r in rows)
    print(f"store: {args.db or 'SQLite (temp dir)'}; load: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    print(f"(round trips: --calls {args.calls} executions one after another; calls/s: --items {args.items}"
          " map items in one execution; one run each)")


if __name__ == "__main__":
    main()
