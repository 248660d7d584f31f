"""State machine throughput: events/s for a 3-state cycle with a guard.

    python benchmarks/state_machine.py [--events N] [--instances N] [--only memory|durable|grpc|one]

- memory:  MachineEngine over the memory store, events sent by one driver coroutine per instance.
- durable: SQLite with synchronous=FULL (every commit fsync'd), 100 instances receiving events
           at once, so the store groups their commits.
- grpc:    SendEvent calls from concurrent callers to a real server in a child process on
           127.0.0.1 (SQLite, synchronous=FULL); client and server share this machine's cores.
- one:     one instance, events one after another (each durable when send_event returns): µs
           per event next to the raw INSERT + COMMIT floor on the same database (step_floor.py's
           floors, rounds alternating); on PostgreSQL (--durable-url) also the round trips per
           event, counted by a TCP relay between the store and the server.
Targets (issue 4): >= 200,000 events/s in memory, >= 8,000 durable; (issue 18) one instance
<= 1.5x the floor per event.
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


def _step_floor():
    """benchmarks/step_floor.py (this folder is off the path: see the top)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "step_floor", os.path.join(_HERE, "step_floor.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Relay:
    """A TCP relay in front of PostgreSQL that counts round trips: client sends that follow
    an answer from the server (one per statement or pipeline), while `counting`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.trips = 0
        self.counting = False

    async def start(self) -> int:
        server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _pipe(self, client_r, client_w) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        answered = [True]

        async def up() -> None:
            while data := await client_r.read(65536):
                if answered[0] and self.counting:
                    self.trips += 1
                answered[0] = False
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def down() -> None:
            while data := await server_r.read(65536):
                answered[0] = True
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(up(), down(), return_exceptions=True)


async def one_instance(url: str | None, rounds: int = 9) -> tuple[float, float, float | None]:
    """(µs per event p50, floor µs p50, round trips per event or None on SQLite)."""
    import sqlalchemy as sa

    from agentrun.storage.factory import resolve_url

    floors = _step_floor()
    with tempfile.TemporaryDirectory() as folder:
        relay: _Relay | None = None
        if url:
            target = sa.make_url(resolve_url(url))
            relay = _Relay(target.host or "127.0.0.1", target.port or 5432)
            port = await relay.start()
            store_url = target.set(host="127.0.0.1", port=port).render_as_string(False)
            dsn = target.set(drivername="postgresql").render_as_string(False)
            floor, close = await floors.postgres_floor(dsn)
        else:
            store_url = f"sqlite+aiosqlite:///{folder}/bench.db"
            floor, close = floors.sqlite_floor(folder), None
        # step_floor.py's engine: its cycle takes events without data.
        store, engine, machines = await floors.open_engine(store_url)
        try:
            per_event = floors.machine_round(machines)
            mine, base = await floors.alternate(rounds, per_event, floor)
            trips = None
            if relay is not None:
                relay.counting = True
                await per_event()
                relay.counting = False
                trips = relay.trips / floors.STEPS
        finally:
            await machines.stop()
            await engine.stop(grace=0)
            await store.close()
            if close is not None:
                await close()
    return mine, base, trips


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
    parser.add_argument("--only", choices=("memory", "durable", "grpc", "one"))
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
    if args.only in (None, "one"):
        mine, floor, trips = asyncio.run(one_instance(args.durable_url))
        where = args.durable_url or "SQLite synchronous=FULL"
        print(
            f"one:      {mine:>10,.0f} µs/event  (1 instance, {where}; floor {floor:,.0f} µs, "
            f"{mine / floor:.2f}x"
            + (f", {trips:.2f} round trips/event" if trips is not None else "")
            + "; target <= 1.5x)",
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
