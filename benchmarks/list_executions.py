"""ListExecutions at scale: one page of 100 in each order and time window, on PostgreSQL and
SQLite, over a tenant with N executions (default 100,000) created one a second.

    .venv/bin/python benchmarks/list_executions.py [--executions 100000] [--pg URL]

Rows are written straight into the executions table (the benchmark measures the list query,
not starts); each case is the store's list_executions as the RPC calls it (limit 101), first
page and a page deep in the list (after a token), median of 7 runs. The time window's bounds
are on created_at while the order is by id, so a window far from the end the list starts at
is read through the (tenant, id) index up to the window: the "old window" rows show that cost
(about 30 ms at 100,000 executions, linear in the count). An index on (tenant, created_at)
was tried: PostgreSQL's planner kept walking the id index (it cannot know that created_at
follows id), SQLite gained about 2x; not worth an index on every start.
The machine is shared: the figures move with its load (the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import ExecutionState
from agentrun.storage.sql import SqlStore

T0 = 1_790_000_000.0
STATES = [
    ExecutionState.SUCCEEDED,
    ExecutionState.FAILED,
    ExecutionState.RUNNING,
    ExecutionState.SUCCEEDED,
]


async def fill(store: SqlStore, count: int) -> list[str]:
    ids = [f"{int((T0 + i) * 1000):012x}{i:012x}" for i in range(count)]
    rows: list[dict[str, Any]] = [
        {
            "id": ident,
            "tenant": "acme",
            "workflow": "wf" if i % 10 else "rare",
            "version": 1,
            "state": STATES[i % len(STATES)].value,
            "created_at": T0 + i,
            "last_sequence": 0,
            "priority": 0,
            "lease_epoch": 0,
        }
        for i, ident in enumerate(ids)
    ]
    for start in range(0, count, 5000):
        chunk = rows[start : start + 5000]
        await store.database.transaction(
            lambda conn, chunk=chunk: conn.execute(sa.insert(db.executions), chunk)
        )
    await store.database.transaction(lambda conn: conn.exec_driver_sql("ANALYZE"))
    return ids


async def measure(store: SqlStore, count: int, ids: list[str]) -> list[tuple[str, float]]:
    deep_old, deep_new = ids[count // 2], ids[count // 2]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("oldest first, page 1", {}),
        ("newest first, page 1", {"newest_first": True}),
        ("oldest first, mid-list token", {"after_id": deep_old}),
        ("newest first, mid-list token", {"newest_first": True, "after_id": deep_new}),
        ("newest first, last hour", {"newest_first": True, "created_after": T0 + count - 3600}),
        (
            "newest first, old window (1h, 10% in)",
            {
                "newest_first": True,
                "created_after": T0 + count // 10,
                "created_before": T0 + count // 10 + 3600,
            },
        ),
        (
            "oldest first, old window (1h, 90% in)",
            {"created_after": T0 + count * 9 // 10, "created_before": T0 + count * 9 // 10 + 3600},
        ),
        (
            "newest first, workflow rare + state",
            {
                "newest_first": True,
                "workflow": "rare",
                "states": [ExecutionState.FAILED, ExecutionState.SUCCEEDED],
            },
        ),
    ]
    out = []
    for name, kwargs in cases:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            got = await store.list_executions("acme", limit=101, **kwargs)
            times.append(time.perf_counter() - start)
        assert got, name
        out.append((name, statistics.median(times) * 1000))
    return out


async def run_backend(url: str, count: int) -> list[tuple[str, float]]:
    store = SqlStore(url)
    await store.open()
    try:
        ids = await fill(store, count)
        return await measure(store, count, ids)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "AGENTRUN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    import asyncpg

    admin = args.pg.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"agentrun_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    results: dict[str, list[tuple[str, float]]] = {}
    try:
        pg_url = (
            admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
            + f"/{name}"
        )
        results["postgresql"] = await run_backend(pg_url, args.executions)
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = await run_backend(
                f"sqlite+aiosqlite:///{tmp}/bench.db", args.executions
            )
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    print(
        f"ListExecutions, one page of 100, {args.executions:,} executions; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'case':<42} {'PostgreSQL ms':>14} {'SQLite ms':>10}")
    for (case, pg), (_, lite) in zip(results["postgresql"], results["sqlite"], strict=True):
        print(f"{case:<42} {pg:>14.2f} {lite:>10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
