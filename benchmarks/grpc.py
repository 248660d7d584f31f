"""gRPC benchmark: event latency from the engine's commit to a WatchExecution client.

    python benchmarks/grpc.py [--db URL] [--runs 5] [--in-process]

StartExecution (throughput and latency at concurrency 1/10/50, against a raw grpc.aio unary
call in the same run) is measured in one place: benchmarks/start.py.

The server runs as `agentrun serve` in a child process (unless --in-process, which also
times each event from its store commit); the client is this process, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
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

# Live events: a chain of short sleeps, so each event is committed while the client watches.
CHAIN = "name: chain\nnodes:\n" + "".join(
    f"  - id: n{i}\n    {f'needs: [n{i - 1}]' if i else ''}\n"
    f"    tool: {{name: core.sleep, args: {{seconds: 0.005}}}}\n"
    for i in range(100)
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    target: str, runs: int, committed: dict[tuple[str, int], float] | None = None
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        workflows = ws_grpc.WorkflowServiceStub(channel)
        executions = es_grpc.ExecutionServiceStub(channel)
        await workflows.CreateWorkflow(ws.CreateWorkflowRequest(source=CHAIN))
        from_event, from_commit = await event_latency(executions, runs, committed)
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


async def in_process(db: str, runs: int) -> None:
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
        await run(f"127.0.0.1:{port}", runs, committed)
    finally:
        await server.stop(0)
        await engine.stop(grace=1)
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--runs", type=int, default=5, help="executions of the 100-step chain")
    parser.add_argument("--in-process", action="store_true", help="server in this process")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    db = args.db or f"sqlite:///{workdir / 'bench.db'}"
    print(f"store: {db}")
    if args.in_process:
        asyncio.run(in_process(db, args.runs))
        return
    from tests.server.subprocess_server import ServerProcess

    server = ServerProcess(workdir, args=["--log-level", "WARNING"], db=db).start()
    try:
        asyncio.run(run(server.address, args.runs))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
