"""Scheduling overhead per decision: prints two tables.

    .venv/bin/python benchmarks/scheduler.py
    .venv/bin/python benchmarks/scheduler.py --pg postgresql://postgres@127.0.0.1:5432/test

The first table is the local scheduler alone (one process, in memory). The second compares
it with the fleet scheduler (agentrun.engine.fleet: slots shared by the replicas of one
PostgreSQL database) on the same work: every call is requested, granted and released
through the scheduler, with the release at once (a call of zero length), so the numbers are
the scheduler's own cost per call, not a tool's. The fleet rows run in a scratch database
created on the server given with --pg (default: $AGENTRUN_TEST_POSTGRES or the local test
server) and dropped after.

10,000 ready calls across 100 executions and 10 tenants go through the scheduler; each
decision is one grant (request -> grant, or release -> next grant). "with limits" holds
50 running calls globally and 8 per tenant, so every grant follows a release and the
round robin over tenants runs each time; "no limits" grants every request at once (the
executor skips the scheduler entirely in that case; this measures the scheduler alone).
A third row adds a rate-limit bucket that never runs dry, to price the bucket check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agentrun.engine.scheduler import BucketSpec, Scheduler, SchedulerConfig  # noqa: E402

TENANTS, EXECUTIONS, NODES = 10, 100, 100


def run(config: SchedulerConfig, bucket: str | None) -> tuple[float, int]:
    scheduler = Scheduler(config)
    granted: list[tuple[str, int]] = []
    grant = granted.append
    owners = [(f"e{e}", n) for e in range(EXECUTIONS) for n in range(NODES)]
    start = time.perf_counter()
    for i, owner in enumerate(owners):
        scheduler.request(
            owner,
            tenant=f"t{i % TENANTS}",
            workflow="w",
            execution_priority=i % 3,
            node_priority=0,
            bucket=bucket,
            grant=lambda ticket, o=owner: grant(o),
        )
    done = 0
    while done < len(granted):
        scheduler.release(granted[done])
        done += 1
    elapsed = time.perf_counter() - start
    return elapsed, len(granted)


def local_table() -> None:
    rows = [
        ("no limits", SchedulerConfig(max_running_nodes=1_000_000), None),
        ("with limits (50 global, 8 per tenant)", SchedulerConfig(max_running_nodes=50, max_running_nodes_per_tenant=8), None),
        (
            "with limits and a rate-limit bucket",
            SchedulerConfig(
                max_running_nodes=50,
                max_running_nodes_per_tenant=8,
                rate_limits={"api": BucketSpec(rate=1e9, per=1.0, burst=1_000_000)},
            ),
            "api",
        ),
    ]
    print(f"{'scenario':42} {'decisions':>9} {'us/decision':>12} {'target':>7}")
    for label, config, bucket in rows:
        best = min((run(config, bucket) for _ in range(3)), key=lambda r: r[0])
        elapsed, decisions = best
        print(f"{label:42} {decisions:9d} {elapsed / decisions * 1e6:12.2f} {'10':>7}")
    print(f"{TENANTS} tenants, {EXECUTIONS} executions, {NODES} ready calls each; a decision = request or")
    print("release plus the grant it leads to; best of 3.")


# ------------------------------------------------------------------ local vs shared
CALLS = 2000


async def calls_through(schedulers: list[Any], calls: int, tenants: int) -> float:
    """`calls` requests spread over the schedulers (replicas) and tenants at once; each
    grant is released on the next loop turn. Seconds until every call was granted and
    released."""
    done = asyncio.Event()
    finished = 0
    loop = asyncio.get_running_loop()

    def granted(scheduler: Any, owner: Any) -> None:
        def release() -> None:
            nonlocal finished
            scheduler.release(owner)
            finished += 1
            if finished == calls:
                done.set()

        loop.call_soon(release)

    start = time.perf_counter()
    for i in range(calls):
        scheduler = schedulers[i % len(schedulers)]
        owner = ("e", i)
        scheduler.request(
            owner,
            tenant=f"t{i % tenants}",
            workflow="w",
            execution_priority=0,
            node_priority=0,
            bucket=None,
            grant=lambda _t, s=scheduler, o=owner: granted(s, o),
            target="tool",
        )
    await asyncio.wait_for(done.wait(), 300)
    return time.perf_counter() - start


async def one_call(scheduler: Any, times: int = 21) -> float:
    """Request to grant of a single call with nothing else waiting (the median of `times`)."""
    samples = []
    for i in range(times):
        got = asyncio.Event()
        start = time.perf_counter()
        scheduler.request(
            ("one", i), tenant="t", workflow="w", execution_priority=0, node_priority=0,
            bucket=None, grant=lambda _t, g=got: g.set(), target="tool",
        )
        await got.wait()
        samples.append(time.perf_counter() - start)
        scheduler.release(("one", i))
        await asyncio.sleep(0.01)
    return sorted(samples)[len(samples) // 2]


async def fleet_rows(pg: str) -> list[tuple[str, int, float, float, str]]:
    import asyncpg

    from agentrun.engine.fleet import FleetScheduler
    from agentrun.storage.slots import SlotTable
    from agentrun.storage.sql import SqlStore

    admin = pg.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"agentrun_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name
    rows = []
    try:
        config = SchedulerConfig(max_running_nodes=50, max_running_nodes_per_tenant=8)
        local = Scheduler(config)
        rows.append(("local (one process)", CALLS, await calls_through([local], CALLS, 10), await one_call(local), "-"))
        for replicas in (1, 3):
            stores = [SqlStore(url) for _ in range(replicas)]
            schedulers = []
            for i, store in enumerate(stores):
                await store.open()
                scheduler = FleetScheduler(
                    config, SlotTable(store.database), replica_id=f"r{i}", lease_seconds=15, listen=store.listen
                )
                await scheduler.start()
                schedulers.append(scheduler)
            rounds = [0]
            for scheduler in schedulers:
                table = scheduler._table
                real = table.round

                async def counted(*args: Any, _real: Any = real, _rounds: list[int] = rounds, **kwargs: Any) -> Any:
                    _rounds[0] += 1
                    return await _real(*args, **kwargs)

                table.round = counted  # type: ignore[method-assign]
            elapsed = await calls_through(schedulers, CALLS, 10)
            single = await one_call(schedulers[0])
            rows.append((f"shared, {replicas} replica{'s' if replicas > 1 else ''}", CALLS, elapsed, single,
                         f"{CALLS * 2 / rounds[0]:.1f}"))
            for scheduler in schedulers:
                await scheduler.close()
            for store in stores:
                await store.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return rows


def fleet_table(pg: str) -> None:
    rows = asyncio.run(fleet_rows(pg))
    print()
    print(f"{'scheduler':24} {'calls':>6} {'us/call':>9} {'calls/s':>9} {'1 call (ms)':>12} {'changes/round':>14}")
    for label, calls, elapsed, single, per_round in rows:
        print(f"{label:24} {calls:6d} {elapsed / calls * 1e6:9.0f} {calls / elapsed:9.0f} {single * 1e3:12.2f} {per_round:>14}")
    print("50 running calls at most, 8 per tenant, 10 tenants; each call requested, granted and released at")
    print("once. us/call: wall time per call through the scheduler; 1 call: request to grant with nothing")
    print("else waiting (median of 21); changes/round: requests and releases carried by one shared round")
    print("(a transaction of 4 statements: lock; writes and counts; candidates; grants and notifications).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pg", default=os.environ.get("AGENTRUN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL server for the shared rows ('' to skip them)",
    )
    args = parser.parse_args()
    local_table()
    if args.pg:
        fleet_table(args.pg)


if __name__ == "__main__":
    main()
