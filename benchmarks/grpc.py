"""gRPC benchmark: StartExecution throughput and latency at concurrency 1/10/50 for a 1-node
workflow, and event latency from the engine's commit to a WatchExecution client.

    python benchmarks/grpc.py [--db URL] [--seconds 5] [--in-process]

The server runs as `agentrun serve` in a child process (unless --in-process); the load
generator is this process, on the same machine: both share its cores, so the figures are
a floor for what a separate client machine would see.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This file is named grpc.py: keep its directory off the path so `import grpc` is grpcio.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import grpc

from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc

ONE_NODE = "name: one\nnodes:\n  - id: only\n    pass: {value: 1}\n"
# Live events: a chain of short sleeps, so each event is committed while the client watches.
CHAIN = "name: chain\nnodes:\n" + "".join(
    f"  - id: n{i}\n    {f'needs: [n{i - 1}]' if i else ''}\n"
    f"    tool: {{name: core.sleep, args: {{seconds: 0.005}}}}\n"
    for i in range(100)
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def starts(
    stub: es_grpc.ExecutionServiceStub, concurrency: int, seconds: float
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    count = 0

    async def worker(w: int) -> None:
        nonlocal count
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            t0 = time.perf_counter()
            await stub.StartExecution(
                es.StartExecutionRequest(
                    workflow="workflows/one", request_id=f"c{concurrency}-{w}-{n}"
                )
            )
            latencies.append(time.perf_counter() - t0)
            count += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return count / (time.perf_counter() - began), latencies


async def event_latency(
    stub: es_grpc.ExecutionServiceStub, runs: int, committed: dict[tuple[str, int], float] | None
) -> tuple[list[float], list[float]]:
    """(event time -> client, commit returned -> client) for live events, in seconds."""
    from_event: list[float] = []
    from_commit: list[float] = []
    for _ in range(runs):
        started = await stub.StartExecution(es.StartExecutionRequest(workflow="workflows/chain"))
        call = stub.WatchExecution(es.WatchExecutionRequest(name=started.execution.name))
        async for response in call:
            received = time.time()
            event = response.event
            # Live events only (the backlog read at connect time is not a latency).
            if event.sequence <= 3:
                continue
            from_event.append(received - (event.time.seconds + event.time.nanos / 1e9))
            if committed is not None:
                key = (event.execution.removeprefix("executions/"), event.sequence)
                if key in committed:
                    from_commit.append(received - committed[key])
    return from_event, from_commit


async def run(
    target: str, seconds: float, committed: dict[tuple[str, int], float] | None = None
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        workflows = ws_grpc.WorkflowServiceStub(channel)
        executions = es_grpc.ExecutionServiceStub(channel)
        await workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=ONE_NODE))
        await workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=CHAIN))
        await starts(executions, 10, 1.0)  # warm-up
        print(
            f"StartExecution, 1-node workflow, {seconds:.0f} s per level "
            f"(load generator on the same {os.cpu_count()} cores as the server):"
        )
        print(f"{'concurrency':>12} {'starts/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in (1, 10, 50):
            rate, lat = await starts(executions, concurrency, seconds)
            print(
                f"{concurrency:>12} {rate:>10.0f} {statistics.median(lat) * 1e3:>8.2f} "
                f"{pct(lat, 0.99) * 1e3:>8.2f}"
            )
            await asyncio.sleep(1.0)  # let the started executions finish
        from_event, from_commit = await event_latency(executions, 5, committed)
        print(
            f"event latency, event created (before its commit) -> WatchExecution client "
            f"({len(from_event)} live events): p50 {statistics.median(from_event) * 1e3:.2f} ms, "
            f"p99 {pct(from_event, 0.99) * 1e3:.2f} ms"
        )
        if from_commit:
            print(
                f"event latency, store commit returned -> WatchExecution client "
                f"({len(from_commit)} live events): p50 {statistics.median(from_commit) * 1e3:.2f} ms, "
                f"p99 {pct(from_commit, 0.99) * 1e3:.2f} ms"
            )


async def in_process(db: str, seconds: float) -> None:
    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.server import AgentrunServer, ServerConfig
    from agentrun.storage.factory import open_store

    store = await open_store(db)
    committed: dict[tuple[str, int], float] = {}
    commit = store.commit

    async def timed_commit(batch):  # type: ignore[no-untyped-def]
        await commit(batch)
        now = time.time()
        for event in batch.events:
            committed[(event.execution_id, event.sequence)] = now

    store.commit = timed_commit  # type: ignore[method-assign]
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    port = await server.start("127.0.0.1:0")
    try:
        await run(f"127.0.0.1:{port}", seconds, committed)
    finally:
        await server.stop(0)
        await engine.stop(grace=1)
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-process", action="store_true", help="server in this process")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    db = args.db or f"sqlite:///{workdir / 'bench.db'}"
    print(f"store: {db}")
    if args.in_process:
        asyncio.run(in_process(db, args.seconds))
        return
    from tests.server.subprocess_server import ServerProcess

    server = ServerProcess(workdir, args=["--log-level", "WARNING"], db=db).start()
    try:
        asyncio.run(run(server.address, args.seconds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
