"""SQLite `events` as a WITHOUT ROWID table (migration 0024) against the rowid table it was:
WAL frames per chain step and pages per event, by the size of the event that carries a node's
output and by how many executions step at once.

    .venv/bin/python benchmarks/events_pages.py [--sizes 100,500,1000,1500,3000,5000]
        [--executions 1,10] [--folder /dev/shm]

A step is one commit: its execution's row (last_sequence) and three events, the second one
carrying `{"output": "x" * SIZE}` (node.succeeded), the others `{"attempt": 1}`; the steps go
round-robin over N executions (N running at once). Frames: the WAL's size after 500 steps
that follow 300 and a TRUNCATE checkpoint, divided by the frame size. Pages: the file's pages
in use (page_count - freelist_count) after, per 1,000 events. Both layouts are built from the
store's own schema (a file migrated to the head), `events` rebuilt from its stored definition
with or without `WITHOUT ROWID`. Nothing is asserted. Migration 0025 made `events` a rowid
table again on these numbers; benchmarks/rowid_layouts.py measures `nodes` and `sm_history`
the same way.

Why it differs: a WITHOUT ROWID table is an index b-tree, whose cells keep at most ~1,000
bytes of a row on a 4 KiB page (a rowid table's leaf keeps ~4,000) before the rest goes to an
overflow page of its own; and its rows are in key order (execution, sequence), so executions
stepping at once fill and split one leaf each, where the rowid table appended to one leaf and
its key index took ~20-byte entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from agentrun.storage.sql import SqlStore

WARM, STEPS = 300, 500


async def _migrated(path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.close()


def _layout(conn: sqlite3.Connection, *, rowid: bool) -> None:
    """`events` (empty) rebuilt with or without rowids, as 0024 and 0025 rebuild it."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    body = sql[sql.index("(") : sql.rindex(")") + 1]
    conn.execute("DROP TABLE events")
    conn.execute(f"CREATE TABLE events {body}{'' if rowid else ' WITHOUT ROWID'}")


def measure(folder: str, size: int, executions: int, rowid: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=folder) as where:
        path = Path(where) / "events.db"
        asyncio.run(_migrated(path))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        _layout(conn, rowid=rowid)
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        ids = [f"ex-{n:04d}" for n in range(executions)]
        conn.executemany(
            "INSERT INTO executions (id, tenant, workflow, version, state, created_at,"
            " last_sequence) VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0, 0)",
            [(i,) for i in ids],
        )
        output, small = json.dumps({"output": "x" * size}), json.dumps({"attempt": 1})
        last = dict.fromkeys(ids, 0)

        def step(n: int) -> None:
            ex = ids[n % executions]
            seq = last[ex]
            conn.execute("BEGIN")
            conn.execute("UPDATE executions SET last_sequence = ? WHERE id = ?", (seq + 3, ex))
            for k in (1, 2, 3):
                conn.execute(
                    "INSERT INTO events (execution_id, sequence, type, node_id, data, time)"
                    " VALUES (?, ?, 'node.succeeded', 'n', ?, 1.0)",
                    (ex, seq + k, output if k == 2 else small),
                )
            conn.execute("COMMIT")
            last[ex] = seq + 3

        for n in range(WARM):
            step(n)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(WARM, WARM + STEPS):
            step(n)
        frames = (os.path.getsize(f"{path}-wal") - 32) / (page + 24) / STEPS
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used = conn.execute("PRAGMA page_count").fetchone()[0]
        used -= conn.execute("PRAGMA freelist_count").fetchone()[0]
        conn.close()
        return frames, used * 1000 / (3 * (WARM + STEPS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,500,1000,1500,3000,5000")
    parser.add_argument("--executions", default="1,10")
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    print(
        "executions  output B   frames/step rowid -> without   pages/1000 events rowid -> without"
    )
    for executions in (int(n) for n in args.executions.split(",")):
        for size in (int(n) for n in args.sizes.split(",")):
            f0, p0 = measure(args.folder, size, executions, rowid=True)
            f1, p1 = measure(args.folder, size, executions, rowid=False)
            print(
                f"{executions:>10}  {size:>8}   {f0:>6.2f} -> {f1:<6.2f} ({f1 / f0 - 1:+.0%})"
                f"      {p0:>7.0f} -> {p1:<7.0f} ({p1 / p0 - 1:+.0%})"
            )


if __name__ == "__main__":
    main()
