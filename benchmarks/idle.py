"""Idle executions: what N executions waiting for a signal cost, and how fast a signal wakes one.

    .venv/bin/python benchmarks/idle.py            # 100,000 waiting executions on SQLite
    .venv/bin/python benchmarks/idle.py --quick    # 10,000
    .venv/bin/python benchmarks/idle.py --url postgresql+asyncpg://...   # another store
    AGENTRUN_BENCH_ROOT=../other-checkout .venv/bin/python benchmarks/idle.py  # its code

One process, one engine (in process, no gRPC). A workflow of one `wait` node for the signal
`go`; N executions are started in batches of 500 concurrent `start_execution` calls, and each
one's first turn (the node WAITING) is committed before the next batch. Measured:
- the start rate (N / the time of every batch);
- RSS above the idle process (engine started, workflow registered, nothing running), after a
  full collection, per waiting execution too;
- signal apply latency: `signal` to the execution's end (the wait node's output committed, the
  execution SUCCEEDED), one at a time to executions picked at random, p50 and p99;
- the process's CPU time per start and per signal (user + system, every thread), and the
  event loop's thread's alone per start: on a machine shared with other work, steadier than
  the wall-clock rows.
The floor, measured in the same run on the same kind of file: a raw sqlite3
`INSERT`+`COMMIT` (WAL, synchronous=FULL), the least a durable signal costs.

Targets (issue 18): <= 1 GB in total (<= 2 KiB each above the idle process) for 100,000,
>= 2,000 starts/s on SQLite, signal applied within 10 ms p99.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

# The checkout whose code runs: this one, or AGENTRUN_BENCH_ROOT (another checkout, for
# before/after figures from the same script).
ROOT = os.environ.get("AGENTRUN_BENCH_ROOT") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))
)
sys.path.insert(0, ROOT)

WORKFLOW = """
name: idle
nodes:
  - id: approve
    wait: {signal: go}
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raw_commit_seconds(path: str, n: int = 300) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    out = []
    for i in range(n):
        t = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t)
    db.close()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(url: str, n: int, signals: int, batch: int) -> dict[str, float]:
    from agentrun.engine import Engine, EngineConfig, load_workflow
    from agentrun.engine.instrument import Instrumentation
    from agentrun.engine.tuning import tune_gc
    from agentrun.integrations import Registry, default_agents
    from agentrun.storage.factory import open_store
    from agentrun.storage.records import ExecutionState

    class Waiting(Instrumentation):
        """Counts the executions whose wait node's WAITING is committed."""

        def __init__(self) -> None:
            self.ids: set[str] = set()
            self.changed = asyncio.Event()

        def events_committed(self, record, events, seconds):  # type: ignore[no-untyped-def]
            for event in events:
                if event.type == "node.waiting":
                    self.ids.add(record.id)
                    self.changed.set()

    waiting_ids = Waiting()
    store = await open_store(url)
    engine = Engine(
        store,
        tools=Registry([]),
        agents=default_agents(),
        config=EngineConfig(replica_id="bench", lease_seconds=60, instrumentation=waiting_ids),
    )
    tune_gc()
    await engine.start()
    await engine.create_workflow(load_workflow(WORKFLOW))
    # One execution through to its wait, so caches and lazy imports count in the idle process.
    warm = await engine.start_execution("idle", {})
    await _until_waiting(waiting_ids, [warm.id])
    await engine.signal(warm.id, "go")
    await engine.wait(warm.id, 30)
    gc.collect()
    idle_rss = rss_bytes()

    ids: list[str] = []
    cpu0 = time.process_time()
    loop0 = time.thread_time()
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        size = min(batch, n - start)
        records = await asyncio.gather(
            *(engine.start_execution("idle", {"i": start + i}) for i in range(size))
        )
        chunk = [r.id for r in records]
        await _until_waiting(waiting_ids, chunk)
        ids.extend(chunk)
    started = time.perf_counter() - t0
    start_cpu = time.process_time() - cpu0
    start_loop = time.thread_time() - loop0
    gc.collect()
    await asyncio.sleep(0.5)
    gc.collect()
    loaded_rss = rss_bytes()
    waiting = await store.list_executions("default", limit=n + 10, states=[ExecutionState.WAITING])

    latencies = []
    cpu0 = time.process_time()
    for execution_id in random.Random(7).sample(ids, min(signals, len(ids))):
        t = time.perf_counter()
        await engine.signal(execution_id, "go", {"ok": True})
        final = await engine.wait(execution_id, 30)
        latencies.append(time.perf_counter() - t)
        assert final.state is ExecutionState.SUCCEEDED, final.state
    signal_cpu = time.process_time() - cpu0
    await engine.stop(grace=1)
    await store.close()
    return {
        "n": n,
        "waiting": len(waiting),
        "start_rate": n / started,
        "idle_rss": idle_rss,
        "rss_above": loaded_rss - idle_rss,
        "p50": statistics.median(latencies),
        "p99": pct(latencies, 0.99),
        "signals": len(latencies),
        "start_cpu": start_cpu / n,
        "start_loop": start_loop / n,
        "signal_cpu": signal_cpu / max(1, len(latencies)),
    }


async def _until_waiting(seen: object, ids: list[str]) -> None:
    """Every execution's first turn committed: the wait node WAITING."""
    while True:
        have = seen.ids  # type: ignore[attr-defined]
        if all(i in have for i in ids):
            return
        seen.changed.clear()  # type: ignore[attr-defined]
        await asyncio.wait_for(seen.changed.wait(), 120)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10,000 executions")
    parser.add_argument("-n", type=int, default=0, help="waiting executions (default 100,000)")
    parser.add_argument("--url", help="a store URL (default: a fresh SQLite file)")
    parser.add_argument("--signals", type=int, default=300)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    tmp = tempfile.mkdtemp(prefix="agentrun-idle-bench-")
    try:
        url = args.url or f"sqlite+aiosqlite:///{tmp}/idle.db"
        floor = raw_commit_seconds(os.path.join(tmp, "floor.db"))
        r = asyncio.run(run(url, n, args.signals, args.batch))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    backend = "sqlite" if url.startswith("sqlite") else url.split(":", 1)[0]
    mib = 1024 * 1024
    rows = [
        ("waiting executions", f"{r['waiting']:,} of {r['n']:,}", "-"),
        (f"starts/s (batches of {args.batch})", f"{r['start_rate']:,.0f}/s", ">= 2,000/s"),
        ("RSS of the idle process", f"{r['idle_rss'] / mib:,.0f} MiB", "-"),
        ("RSS above idle, total", f"{r['rss_above'] / mib:,.0f} MiB", "<= 1 GB"),
        ("RSS above idle, each", f"{r['rss_above'] / r['n'] / 1024:,.2f} KiB", "<= 2 KiB"),
        (f"signal applied, p50 ({r['signals']} signals)", f"{r['p50'] * 1000:.2f} ms", "-"),
        ("signal applied, p99", f"{r['p99'] * 1000:.2f} ms", "<= 10 ms"),
        ("CPU per start (process)", f"{r['start_cpu'] * 1e6:,.0f} us", "-"),
        ("CPU per start (event loop's thread)", f"{r['start_loop'] * 1e6:,.0f} us", "-"),
        ("CPU per signal (process)", f"{r['signal_cpu'] * 1e6:,.0f} us", "-"),
        ("floor: raw INSERT+COMMIT, p50", f"{pct(floor, 0.5) * 1000:.2f} ms", "-"),
        ("floor: raw INSERT+COMMIT, p99", f"{pct(floor, 0.99) * 1000:.2f} ms", "-"),
    ]
    print(f"idle executions on {backend}")
    print(f"{'measure':40} {'result':22} {'target':>12}")
    for name, value, target in rows:
        print(f"{name:40} {value:22} {target:>12}")


if __name__ == "__main__":
    main()
