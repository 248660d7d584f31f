"""Bulk control (ControlExecutions' engine side, `Engine.control_many`): pause, resume and
cancel N waiting executions of one workflow, a page of P per call, on the memory store and
SQLite (and PostgreSQL with --pg URL), in one engine process.

    .venv/bin/python benchmarks/bulk_control.py [--executions 1000] [--page 100] [--pg URL]

Each row: the action, the calls it took (pages), the wall time of all of them, and
executions per second. Every execution is one control request to its run (at most
BULK_PARALLEL at once), each committed before it is acknowledged, so the figure is bounded by
the store's commit rate. The machine is shared: the figures move with its load (the load
average is printed). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from agentrun.storage.sql import SqlStore

WAITER = "name: waiter\nnodes:\n  - id: ask\n    wait: {signal: go}\n"


async def run_case(store: Any, count: int, page: int) -> list[tuple[str, int, float]]:
    if isinstance(store, SqlStore):
        await store.open()
    engine = Engine(store, tools=default_tools(), agents=default_agents(), config=EngineConfig(seed=1))
    await engine.start()
    rows = []
    try:
        await engine.create_workflow(load_workflow(WAITER))
        ids = [(await engine.start_execution("waiter", {})).id for _ in range(count)]
        while len(await engine.list_executions(limit=count, states=[ExecutionState.WAITING])) < count:
            await asyncio.sleep(0.05)
        for action, states in (
            ("pause", [ExecutionState.WAITING]),
            ("resume", [ExecutionState.PAUSED]),
            ("cancel", [ExecutionState.WAITING]),
        ):
            started = time.perf_counter()
            after, calls, done = None, 0, 0
            while True:
                outcomes, after = await engine.control_many(
                    action, workflow="waiter", states=states, limit=page, after_id=after
                )
                calls += 1
                done += sum(o.done for o in outcomes)
                if after is None:
                    break
            elapsed = time.perf_counter() - started
            if done != len(ids):
                raise SystemExit(f"{action}: {done} of {len(ids)} done")
            rows.append((action, calls, elapsed))
    finally:
        await engine.stop(grace=0)
        if isinstance(store, SqlStore):
            await store.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--pg", help="a PostgreSQL URL (postgresql+asyncpg://...) of an empty database")
    args = parser.parse_args()
    print(f"{args.executions} waiting executions, pages of {args.page}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'store':<11} {'action':<7} {'calls':>5} {'seconds':>8} {'per second':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[tuple[str, Any]] = [
            ("memory", MemoryStore()),
            ("sqlite", SqlStore(f"sqlite+aiosqlite:///{Path(tmp) / 'bulk.db'}")),
        ]
        if args.pg:
            stores.append(("postgresql", SqlStore(args.pg)))
        for name, store in stores:
            for action, calls, elapsed in await run_case(store, args.executions, args.page):
                print(f"{name:<11} {action:<7} {calls:>5} {elapsed:>8.2f} {args.executions / elapsed:>11.0f}")


if __name__ == "__main__":
    asyncio.run(main())
