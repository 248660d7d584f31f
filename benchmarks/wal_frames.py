"""WAL frames a durable write writes on SQLite, by the table or index each frame is a page of.

    .venv/bin/python benchmarks/wal_frames.py [--folder /dev/shm] [--starts 500]

On SQLite a commit costs its CPU, its fsync and its pages: every page a transaction changed
is one WAL frame (a 24-byte header and the page), written before the fsync. On the VM of
7 Dec 2026 each frame past the first added ~25 µs to a commit on disk, whatever the page
size (1, 2 and 4 KiB pages gave the same chain ratio), so the count of frames is half of
why a chain step costs more than step_floor.py's floor (one frame). This script counts them
for the three durable writes of issue 18:

- a chain step: one execution of step_floor.py's 100-step chain of stored tool calls;
- a state machine event: 100 events to one instance of step_floor.py's cycle;
- StartExecution: `--starts` starts of a 1-node `pass` workflow from 10 concurrent callers
  in process (`Engine.start_execution`, the engine and store `agentrun serve` runs), each
  execution created and ended in its first commit, grouped by the store's writer.

Each scenario runs three rounds first (warm caches, grown files), then the WAL is truncated,
the store's own checkpoints are held off (`CHECKPOINT_PAGES`, `CHECKPOINT_COMMITS`) and one
round runs; the WAL file's frame headers then give each frame's page number and the commits
(a frame with a database size is a commit's last), and SQLite's `dbstat` table maps each page
to its b-tree. Counts, not times: the same on a busy machine. `sqlite_schema` is the header
page, written whenever the database file grows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(1, str(_HERE))

import step_floor  # benchmarks/, after the checkout's root

from agentrun.storage import sqlite_writes

PASS = "name: one\nnodes:\n  - id: only\n    pass: {value: 1}\n"
CONCURRENCY = 10


def wal_frames(path: str) -> tuple[list[int], int]:
    """(the page number of each frame of the WAL's current generation, its commits)."""
    data = Path(f"{path}-wal").read_bytes()
    if len(data) < 32:
        return [], 0
    (page_size,) = struct.unpack(">I", data[8:12])
    salts = data[16:24]
    pages: list[int] = []
    commits = 0
    at = 32
    while at + 24 + page_size <= len(data):
        page, size_after = struct.unpack(">II", data[at : at + 8])
        if data[at + 8 : at + 16] != salts:  # a frame of an earlier generation: the end
            break
        pages.append(page)
        commits += size_after != 0
        at += 24 + page_size
    return pages, commits


def truncate_wal(path: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def btrees(path: str) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT pageno, name FROM dbstat"))
    finally:
        conn.close()


async def counted(
    path: str, scenario: Callable[[], Awaitable[Any]], units: int
) -> tuple[float, float, list[tuple[str, float]]]:
    """(frames a unit, units a commit, [(b-tree, frames a unit)]) of one round of `scenario`."""
    for _ in range(3):
        await scenario()
    truncate_wal(path)
    await scenario()
    pages, commits = wal_frames(path)
    names = btrees(path)
    per_tree = collections.Counter(names.get(page, f"page {page}") for page in pages)
    return (
        len(pages) / units,
        units / max(commits, 1),
        [(name, count / units) for name, count in per_tree.most_common()],
    )


async def measure(folder: str, starts: int) -> list[tuple[str, float, float, list[Any]]]:
    path = f"{folder}/store.db"
    store, engine, machines = await step_floor.open_engine(f"sqlite+aiosqlite:///{path}")
    from agentrun.engine import load_workflow

    await engine.create_workflow(load_workflow(PASS))
    rounds = [0]

    async def start_round() -> None:
        rounds[0] += 1

        async def caller(c: int) -> None:
            for n in range(starts // CONCURRENCY):
                await engine.start_execution("one", {}, request_id=f"{rounds[0]}-{c}-{n}")

        await asyncio.gather(*(caller(c) for c in range(CONCURRENCY)))

    results = []
    try:
        scenarios: list[tuple[str, Callable[[], Awaitable[Any]], int]] = [
            ("chain step", step_floor.chain_round(engine), step_floor.STEPS),
            ("state machine event", step_floor.machine_round(machines), step_floor.STEPS),
            (f"StartExecution, {CONCURRENCY} callers", start_round, starts),
        ]
        for name, scenario, units in scenarios:
            results.append((name, *await counted(path, scenario, units)))
    finally:
        await machines.stop()
        await engine.stop(grace=0)
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="where the SQLite file goes (e.g. /dev/shm)")
    parser.add_argument("--starts", type=int, default=500, help="starts in the measured round")
    args = parser.parse_args()
    # One round's frames must stay in one WAL generation: no checkpoint of ours, and SQLite's
    # own (AUTOCHECKPOINT_PAGES) is past the ~3,000 frames of 500 starts.
    sqlite_writes.CHECKPOINT_PAGES = sqlite_writes.CHECKPOINT_COMMITS = 10**9
    folder = tempfile.mkdtemp(prefix="agentrun-wal-frames-", dir=args.folder)
    try:
        rows = asyncio.run(measure(folder, args.starts))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'write':32} {'frames':>7} {'writes a commit':>16}")
    for name, frames, per_commit, trees in rows:
        print(f"{name:32} {frames:>7.2f} {per_commit:>16.1f}")
        for tree, count in trees:
            print(f"  {tree:38} {count:>5.2f}")
    print(
        "(frames: WAL frames a write (pages written), in all and of each table or index "
        "below it; step_floor.py's floor, one INSERT + COMMIT, writes 1 frame a commit)"
    )


if __name__ == "__main__":
    main()
