"""State machine throughput: events/s for a 3-state cycle with a guard.

    python benchmarks/state_machine.py [--events N] [--instances N] [--only memory|durable|grpc]

- memory:  MachineEngine over the memory store, events sent by one driver coroutine per instance.
- durable: SQLite with synchronous=FULL (every commit fsync'd), 100 instances receiving events
           at once, so the store groups their commits.
- grpc:    SendEvent calls from concurrent callers to a real server in a child process on
           127.0.0.1 (SQLite, synchronous=FULL); client and server share this machine's cores.
Targets (issue 4): >= 200,000 events/s in memory, >= 8,000 durable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

# benchmarks/grpc.py would shadow the grpc package: take this folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from agentrun.engine import Engine, load_workflow
from agentrun.engine.machine import MachineEngine
from agentrun.integrations import default_agents, default_tools

CYCLE = """
name: cycle
mode: state_machine
initial: a
data: {limit: 1000000000}
states:
  a:
    on:
      NEXT:
        - guard: "${{ event.data.n < data.limit }}"
          target: b
        - target: a
  b: {on: {NEXT: c}}
  c: {on: {NEXT: a}}
"""


async def _engine(store):
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    await engine.create_workflow(load_workflow(CYCLE))
    return engine, machines


async def _drive(machines, instances: int, per_instance: int) -> float:
    ids = [(await machines.create_instance("cycle")).id for _ in range(instances)]
    payloads = [{"n": i} for i in range(per_instance)]

    async def driver(instance_id: str) -> None:
        send = machines.send_event
        for data in payloads:
            await send(instance_id, "NEXT", data)

    started = time.perf_counter()
    await asyncio.gather(*(driver(i) for i in ids))
    return instances * per_instance / (time.perf_counter() - started)


async def memory(events: int, rounds: int = 3) -> tuple[float, float]:
    """(best, median) of `rounds` runs: the machine is shared, so single runs are noisy."""
    from agentrun.storage.memory import MemoryStore

    engine, machines = await _engine(MemoryStore())
    await _drive(machines, 10, 2000)  # warm-up
    rates = sorted([await _drive(machines, 100, max(1, events // 100)) for _ in range(rounds)])
    await machines.stop()
    await engine.stop(grace=0)
    return rates[-1], rates[len(rates) // 2]


async def durable(events: int, instances: int, url: str | None = None) -> float:
    from agentrun.storage.factory import resolve_url
    from agentrun.storage.sql import SqlStore

    with tempfile.TemporaryDirectory() as folder:
        if url:
            store = SqlStore(resolve_url(url))
        else:
            store = SqlStore(f"sqlite+aiosqlite:///{folder}/bench.db", synchronous="FULL")
        await store.open()
        engine, machines = await _engine(store)
        await _drive(machines, instances, 20)  # warm-up
        rate = await _drive(machines, instances, max(1, events // instances))
        await machines.stop()
        await engine.stop(grace=0)
        await store.close()
    return rate


async def grpc_rate(events: int, instances: int) -> float:
    """The server (tests/machines/server_driver.py: SQLite FULL) runs in a child process; this
    process is the load generator, with raw stubs (no SDK conversions)."""
    import subprocess

    import grpc
    from google.protobuf import struct_pb2

    from agentrun.v1 import state_machine_service_pb2 as sm
    from agentrun.v1 import state_machine_service_pb2_grpc as sm_grpc
    from agentrun.v1 import workflow_service_pb2 as ws
    from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc

    driver = os.path.join(os.path.dirname(_HERE), "tests", "machines", "server_driver.py")
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen(  # noqa: ASYNC220 - once, before the measurement
            [sys.executable, driver, f"{folder}/bench.db"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().split()[1])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await ws_grpc.WorkflowServiceStub(channel).CreateWorkflow(
                    ws.CreateWorkflowRequest(source=CYCLE)
                )
                stub = sm_grpc.StateMachineServiceStub(channel)
                names = [
                    (
                        await stub.CreateInstance(sm.CreateInstanceRequest(workflow="cycle"))
                    ).instance.name
                    for _ in range(instances)
                ]
                per = max(1, events // instances)

                async def driver_task(name: str) -> None:
                    for n in range(per):
                        data = struct_pb2.Value()
                        data.struct_value.fields["n"].number_value = n
                        await stub.SendEvent(
                            sm.SendEventRequest(name=name, event="NEXT", data=data)
                        )

                started = time.perf_counter()
                await asyncio.gather(*(driver_task(n) for n in names))
                return instances * per / (time.perf_counter() - started)
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=400_000, help="events in memory (default 400,000)"
    )
    parser.add_argument("--durable-events", type=int, default=40_000)
    parser.add_argument("--grpc-events", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument(
        "--durable-url", help="measure `durable` on this database instead (e.g. postgresql://...)"
    )
    parser.add_argument("--only", choices=("memory", "durable", "grpc"))
    args = parser.parse_args()
    if args.only in (None, "memory"):
        best, median = asyncio.run(memory(args.events))
        print(
            f"memory:   {best:>10,.0f} events/s  (best of 3; median {median:,.0f}; target 200,000)",
            flush=True,
        )
    if args.only in (None, "durable"):
        rate = asyncio.run(durable(args.durable_events, args.instances, args.durable_url))
        print(
            f"durable:  {rate:>10,.0f} events/s  ({'SQLite synchronous=FULL' if not args.durable_url else args.durable_url}, "
            f"{args.instances} instances; target 8,000)",
            flush=True,
        )
    if args.only in (None, "grpc"):
        rate = asyncio.run(grpc_rate(args.grpc_events, args.instances))
        print(
            f"grpc:     {rate:>10,.0f} events/s  (SendEvent from {args.instances} concurrent callers in another "
            "process; server on SQLite FULL; both on this machine)",
            flush=True,
        )


if __name__ == "__main__":
    main()
