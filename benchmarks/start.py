"""StartExecution against its floor: starts/s and p50/p99 latency at concurrency 1, 10 and 50,
each level measured on a raw grpc.aio unary call (a trivial servicer answering a canned
StartExecutionResponse, in its own process) and on `agentrun serve`, back to back in one run;
every row shows the raw server's p99 at its level ("raw p99") beside its own, and the server
process's CPU per call with its main thread's share ("loop": the event loop, which runs gRPC's
handling, the servicers and the engine; the rest is gRPC's threads and the SQLite writer's).
`--repeat N` runs the table N times over the same servers and ends with each row's medians.

    python benchmarks/start.py [--db URL] [--seconds 5] [--workflow pass|tool]
                               [--server-root DIR] [--layers] [--repeat N] [--engine-only N]

`--workflow pass` starts a 1-node workflow whose node computes inline (the execution ends in
its first turn); `tool` a 1-node `core.echo` tool call (the start commits the first turn, the
call and its commit follow in the background). `--server-root` serves the code of another
checkout (an older commit), for before/after figures from the same script and machine state.
`--layers` adds a row per level for the server's own layers: `AgentrunServer` (interceptors,
request checks, servicer, conversion) over an engine stand-in that answers a canned record,
so that the gap to raw splits into what the server layers cost and what the engine and its
store cost. `--engine-only N` measures N starts per level through `Engine.start_execution`
in this process instead (no gRPC): starts/s until every run ended, and CPU per execution.
Both servers and this load generator share the machine's cores: the figures are a floor for
what a separate client machine would see. Nothing is asserted; the table is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
# The checkout whose code runs (`--server-root` of --engine-only sets it for a child).
ROOT = Path(os.environ.get("AGENTRUN_BENCH_ROOT") or _HERE.parent).resolve()
sys.path.insert(0, str(ROOT))

import grpc

from agentrun.v1 import execution_pb2 as ex
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc

WORKFLOWS = {
    "pass": "name: one\nnodes:\n  - id: only\n    pass: {value: 1}\n",
    "tool": "name: one\nnodes:\n  - id: only\n    tool: {name: core.echo, args: {x: 1}}\n",
}
START = "/agentrun.v1.ExecutionService/StartExecution"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ the raw floor
async def serve_raw(port: int) -> None:
    """A grpc.aio server with one unary method that returns a canned response: the cost of a
    unary call (HTTP/2, protobuf, the event loop) and nothing else."""
    answer = es.StartExecutionResponse(
        execution=ex.Execution(
            name="executions/01J0000000000000000000000",
            workflow="workflows/one",
            workflow_version=1,
            state=ex.Execution.STATE_PENDING,
        )
    ).SerializeToString()

    async def start(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "agentrun.v1.ExecutionService",
        {"StartExecution": grpc.unary_unary_rpc_method_handler(start)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_layers(port: int) -> None:
    """`AgentrunServer` as `serve` builds it (default config, tuned GC) over a stand-in engine
    whose start_execution answers a canned record at once: the server's layers and nothing
    of the engine or its store. Not a way to run agentrun; a measuring stick."""
    from agentrun.engine.tuning import tune_gc
    from agentrun.server import AgentrunServer, ServerConfig
    from agentrun.storage.records import ExecutionRecord, ExecutionState

    class CannedEngine:
        machines = None

        async def start_execution(self, name: str, input: Any, **kw: Any) -> ExecutionRecord:
            return ExecutionRecord(
                id="01J0000000000000000000000",
                tenant=kw.get("tenant") or "default",
                workflow=name,
                version=1,
                state=ExecutionState.PENDING,
                input=input,
                created_at=time.time(),
                request_id=kw.get("request_id"),
            )

    server = AgentrunServer(cast("Any", CannedEngine()), ServerConfig.load(env={}))
    tune_gc()
    await server.start(f"127.0.0.1:{port}")
    await server.wait_for_termination()


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def ready(target: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await asyncio.wait_for(channel.channel_ready(), 0.5)
                return
        except (TimeoutError, grpc.aio.AioRpcError):
            await asyncio.sleep(0.1)
    raise SystemExit(f"no server at {target}")


# ------------------------------------------------------------------ the load
async def starts(
    channel: grpc.aio.Channel, concurrency: int, seconds: float, tag: str
) -> tuple[float, list[float]]:
    call = channel.unary_unary(
        START,
        request_serializer=es.StartExecutionRequest.SerializeToString,
        response_deserializer=es.StartExecutionResponse.FromString,
    )
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            request = es.StartExecutionRequest(
                workflow="workflows/one", request_id=f"{tag}-{concurrency}-{w}-{n}"
            )
            t0 = time.perf_counter()
            await call(request)
            latencies.append(time.perf_counter() - t0)

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads, from
    /proc."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(
    channel: grpc.aio.Channel, pid: int, concurrency: int, seconds: float, tag: str
) -> tuple[float, list[float], float, float]:
    """(calls/s, latencies, server CPU ms per call, of which the main thread's): the CPU
    columns do not depend on what else the machine runs, the others do. The main thread runs
    the event loop (gRPC's handling, the servicers, the engine); the rest is gRPC's own
    threads and, in agentrun, the SQLite writer thread."""
    cpu, loop = cpu_seconds(pid), cpu_seconds(pid, pid)
    rate, lat = await starts(channel, concurrency, seconds, tag)
    per_call = 1e3 / len(lat)
    return rate, lat, (cpu_seconds(pid) - cpu) * per_call, (cpu_seconds(pid, pid) - loop) * per_call


def row(
    name: str,
    concurrency: int,
    rate: float,
    lat: list[float],
    cpu_ms: float,
    loop_ms: float,
    floor: tuple[float, float],
) -> str:
    """One row; `floor`: the raw server's (calls/s, p99) at this level, measured just before."""
    return (
        f"{name:<10} {concurrency:>5} {rate:>9.0f} {rate / floor[0]:>8.0%} "
        f"{statistics.median(lat) * 1e3:>8.2f} {pct(lat, 0.99) * 1e3:>8.2f} "
        f"{floor[1] * 1e3:>8.2f} {cpu_ms:>8.3f} {loop_ms:>8.3f}"
    )


async def measure(
    targets: dict[str, tuple[str, int]], seconds: float, workflow: str, repeat: int = 1
) -> None:
    """One row per server in `targets` (name -> (address, pid)) at each level, raw first; the
    table `repeat` times over the same servers, then the median of each column (each run's
    ratio to raw is taken within its run) with its range."""
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(grpc.aio.insecure_channel(address))
            for name, (address, _pid) in targets.items()
        }
        await ws_grpc.WorkflowServiceStub(channels["agentrun"]).CreateWorkflow(
            ws.CreateWorkflowRequest(source=WORKFLOWS[workflow])
        )
        for name, channel in channels.items():
            await starts(channel, 10, 1.0, f"warm-{name}")
        await asyncio.sleep(1.0)
        print(
            f"StartExecution, 1-node `{workflow}` workflow, {seconds:g} s per row; raw = a "
            f"trivial grpc.aio unary servicer ({os.cpu_count()} cores shared by the servers "
            f"and this client):"
        )
        print(
            f"{'server':<10} {'conc':>5} {'calls/s':>9} {'of raw':>8} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'raw p99':>8} {'CPU ms':>8} {'loop ms':>8}  (raw p99: the raw "
            f"server's at this level, this run; CPU: the server process's, per call; loop: its "
            f"main thread's, the event loop's)"
        )
        runs: dict[tuple[str, int], list[tuple[float, ...]]] = {}
        for run in range(repeat):
            for concurrency in (1, 10, 50):
                floor: tuple[float, float] | None = None
                for name, channel in channels.items():
                    # Each run's request ids are new: a repeated one would be an idempotent
                    # repeat (a read of the stored execution), not a start.
                    tag = f"{name}{concurrency}r{run}"
                    rate, lat, cpu, loop = await measured(
                        channel, targets[name][1], concurrency, seconds, tag
                    )
                    floor = floor or (rate, pct(lat, 0.99))
                    print(row(name, concurrency, rate, lat, cpu, loop, floor))
                    runs.setdefault((name, concurrency), []).append(
                        (rate, rate / floor[0], statistics.median(lat), pct(lat, 0.99), cpu, loop)
                    )
                await asyncio.sleep(1.0)  # let the started executions finish
        if repeat > 1:
            print(f"medians of {repeat} runs [min-max]:")
            print(
                f"{'server':<10} {'conc':>5} {'calls/s':>9} {'of raw':>13} {'p99 ms':>15} "
                f"{'CPU ms':>19} {'loop ms':>19}"
            )
            for (name, concurrency), values in runs.items():
                print(
                    f"{name:<10} {concurrency:>5} "
                    + " ".join(_spread(values, i) for i in range(6) if i != 2)
                )


def _spread(values: list[tuple[float, ...]], column: int) -> str:
    """One column's median [min-max] over runs, formatted as its kind."""
    got = sorted(v[column] for v in values)
    middle = statistics.median(got)
    if column == 0:
        return f"{middle:>9.0f}"
    if column == 1:
        return f"{middle:>4.0%} [{got[0]:.0%}-{got[-1]:.0%}]"
    if column == 3:
        return f"{middle * 1e3:>5.1f} [{got[0] * 1e3:.0f}-{got[-1] * 1e3:.0f}]"
    return f"{middle:.3f} [{got[0]:.2f}-{got[-1]:.2f}]"


def count_transactions(store: Any) -> list[int]:
    """Counts the SQL store's write transactions (a group commit's is one, however many
    batches it holds): the count, in a one-item list, goes up as they are opened."""
    written = [0]
    database = getattr(store, "database", None)
    for name in ("transaction", "group_transaction", "turn_transaction"):
        method = getattr(database, name, None)
        if method is None:
            continue

        def counted(method: Any = method) -> Any:
            async def call(*args: Any, **kwargs: Any) -> Any:
                written[0] += 1
                return await method(*args, **kwargs)

            return call

        setattr(database, name, counted())
    return written


async def engine_only(db: str, count: int, workflow: str) -> None:
    """Starts through `Engine.start_execution` in this process (no gRPC), until each run has
    ended: what a start costs the engine and its store, CPU included (the SQLite writer
    thread too)."""
    from agentrun.engine import Engine, load_workflow
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.factory import open_store

    store = await open_store(db)
    transactions = count_transactions(store)
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.start()
    await engine.create_workflow(load_workflow(WORKFLOWS[workflow]))

    async def batch(tag: str, concurrency: int, total: int) -> None:
        async def worker(w: int) -> None:
            for n in range(total // concurrency):
                await engine.start_execution("one", {}, request_id=f"{tag}-{w}-{n}")

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        while engine.runs.live:  # every run ended
            await asyncio.sleep(0.005)

    try:
        await batch("warm", 10, 200)
        print(
            f"Engine.start_execution in process, 1-node `{workflow}` workflow, {count} starts "
            f"(code: {ROOT}; store: {db}):"
        )
        print(
            f"{'conc':>5} {'starts/s':>9} {'CPU ms':>8} {'tx':>6}  (per execution: this process's "
            f"CPU, write transactions)"
        )
        for concurrency in (1, 10, 50):
            cpu, began, written = time.process_time(), time.perf_counter(), transactions[0]
            await batch(f"c{concurrency}", concurrency, count)
            seconds = time.perf_counter() - began
            cpu_ms = (time.process_time() - cpu) * 1e3 / count
            tx = (transactions[0] - written) / count
            print(f"{concurrency:>5} {count / seconds:>9.0f} {cpu_ms:>8.3f} {tx:>6.2f}")
    finally:
        await engine.stop(grace=1)
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workflow", choices=sorted(WORKFLOWS), default="pass")
    parser.add_argument("--server-root", type=Path, default=ROOT, help="checkout to serve")
    parser.add_argument(
        "--engine-only",
        type=int,
        metavar="N",
        help="instead: N starts per level through the engine in this process (no gRPC)",
    )
    parser.add_argument(
        "--layers", action="store_true", help="add rows for the server layers without the engine"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="the table N times, then each row's medians"
    )
    parser.add_argument("--raw-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layers-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        asyncio.run(serve_raw(args.raw_server))
        return
    if args.layers_server:
        asyncio.run(serve_layers(args.layers_server))
        return
    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    db = args.db or f"sqlite:///{workdir / 'bench.db'}"
    if args.engine_only:
        if args.server_root.resolve() != ROOT:
            # The engine of another checkout: run this script's copy there, as its own code.
            command = [sys.executable, __file__, "--engine-only", str(args.engine_only)]
            command += ["--workflow", args.workflow, "--db", db]
            root = str(args.server_root.resolve())
            subprocess.run(command, env={**os.environ, "AGENTRUN_BENCH_ROOT": root}, check=True)
            return
        asyncio.run(engine_only(db, args.engine_only, args.workflow))
        return
    root = args.server_root.resolve()
    print(f"store: {db}; server code: {root}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    raw_port, port = free_port(), free_port()
    procs = {
        "raw": (raw_port, spawn([sys.executable, __file__, "--raw-server", str(raw_port)], env))
    }
    server = spawn(
        [
            sys.executable,
            "-c",
            "import sys; from agentrun.cli import main; sys.exit(main())",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            db,
            "--log-level",
            "WARNING",
        ],
        {**env, "PYTHONPATH": str(root)},
    )
    procs["agentrun"] = (port, server)
    if args.layers:
        layers_port = free_port()
        # This script, run as the served checkout's code (AGENTRUN_BENCH_ROOT sets ROOT).
        command = [sys.executable, __file__, "--layers-server", str(layers_port)]
        procs["layers"] = (layers_port, spawn(command, {**env, "AGENTRUN_BENCH_ROOT": str(root)}))
    try:

        async def run() -> None:
            for at, proc in procs.values():
                await ready(f"127.0.0.1:{at}", proc)
            targets = {name: (f"127.0.0.1:{at}", proc.pid) for name, (at, proc) in procs.items()}
            await measure(targets, args.seconds, args.workflow, args.repeat)

        asyncio.run(run())
    finally:
        for _at, proc in procs.values():
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
