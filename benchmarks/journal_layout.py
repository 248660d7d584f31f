"""What a chain step's durable write costs in raw sqlite3 by layout, beside the floor, in one run:
the rows a step stores today against a journal (one row a step, the tables filled later).

    .venv/bin/python benchmarks/journal_layout.py [--rounds 15] [--every 20,50] [--folder DIR]

step_floor.py holds a SQLite chain step to 1.5x one raw INSERT + COMMIT (issue 18), and
chain_layers.py found the step's own statements, without any runtime, at ~1.8-2.0x on this VM's
disk: a step writes ~5 WAL frames (its events and node rows, each table with its key's index)
where the floor writes one. This measures, with the sqlite3 module only (no agentrun code, so
the layouts are compared and not their implementations), per step of 100 (alternating rounds,
each against a floor round next to it; WAL, synchronous=FULL, files in one folder):

- rows: today's shape: per step one transaction of 3 events (a rowid table with its
  (execution_id, sequence) key index) and 2 node upserts (a rowid table with its
  (execution_id, node_id) key index);
- journal: per step one transaction of one row in a rowid table without any index (the step's
  events and nodes as one JSON text, ~450 bytes): the least a durable step can write;
- journal + tables every N: the journal, and every N steps one more transaction that writes
  those N steps' events and nodes into the two tables and deletes their journal rows (what a
  design that keeps only a journal on the step's path would pay, amortized).

Measured 7 Dec 2026 on this VM (three runs, floor 184-248 µs): rows 1.63-1.82x; journal
1.30-1.34x; journal + tables every 20 / 50 steps 1.52-1.66x / 1.55-1.59x. A step's journal row
alone (a new leaf page every ~9 steps, the file's header page with it) is 1.3x, so even that
layout leaves ~0.2x of the 1.5x target for the engine's turn and the commit's way, which
chain_layers.py puts at ~0.6-0.8x today; and writing the tables later costs about what it saves.
Nothing is asserted; the table is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

STEPS = 100
EXECUTION = "01KC0000000000000000000000"
PAYLOAD = json.dumps({"x": 1})
TABLES = (
    (
        "CREATE TABLE events (execution_id TEXT, sequence INTEGER, type TEXT, node_id TEXT,"
        " data TEXT, time REAL, PRIMARY KEY (execution_id, sequence))"
    ),
    (
        "CREATE TABLE nodes (execution_id TEXT, node_id TEXT, state TEXT, attempt INTEGER,"
        " input TEXT, output TEXT, started_at REAL, ended_at REAL,"
        " PRIMARY KEY (execution_id, node_id))"
    ),
)
INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)"
UPSERT_NODE = (
    "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
    " state = excluded.state, output = excluded.output, ended_at = excluded.ended_at"
)

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def connect(folder: str, name: str, *schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(os.path.join(folder, name), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in schema:
        conn.execute(statement)
    return conn


class Steps:
    """A chain's steps' rows: step n ends node n (3 events) and starts node n + 1."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> Rows:
        n, now = self.n, time.time()
        self.n += 1
        events = [(EXECUTION, 3 * n + i, "node.succeeded", f"n{n}", PAYLOAD, now) for i in range(3)]
        nodes = [
            (EXECUTION, f"n{n}", "SUCCEEDED", 1, PAYLOAD, PAYLOAD, now, now),
            (EXECUTION, f"n{n + 1}", "RUNNING", 1, PAYLOAD, None, now, None),
        ]
        return events, nodes


def floor(conn: sqlite3.Connection) -> Callable[[], None]:
    conn.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, data TEXT)")

    def run() -> None:
        for _ in range(STEPS):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO steps (data) VALUES (?)", (PAYLOAD,))
            conn.execute("COMMIT")

    return run


def rows(conn: sqlite3.Connection) -> Callable[[], None]:
    steps = Steps()

    def run() -> None:
        for _ in range(STEPS):
            events, nodes = steps.next()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENT, events)
            conn.executemany(UPSERT_NODE, nodes)
            conn.execute("COMMIT")

    return run


def journal(conn: sqlite3.Connection, every: int | None) -> Callable[[], None]:
    """The journal; with `every`, the tables written every that many steps."""
    conn.execute("CREATE TABLE journal (id INTEGER PRIMARY KEY, execution_id TEXT, batch TEXT)")
    steps, pending = Steps(), []

    def run() -> None:
        for _ in range(STEPS):
            events, nodes = steps.next()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO journal (execution_id, batch) VALUES (?, ?)",
                (EXECUTION, json.dumps([events, nodes])),
            )
            conn.execute("COMMIT")
            if every is None:
                continue
            pending.append((events, nodes))
            if len(pending) >= every:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT_EVENT, [e for events, _ in pending for e in events])
                conn.executemany(UPSERT_NODE, [n for _, nodes in pending for n in nodes])
                conn.execute("DELETE FROM journal")
                conn.execute("COMMIT")
                pending.clear()

    return run


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / STEPS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--every", default="20,50", help="steps between two table writes")
    parser.add_argument("--folder", help="where the SQLite files go")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="agentrun-journal-", dir=args.folder)
    try:
        base = floor(connect(folder, "floor.db"))
        layouts = {"rows": rows(connect(folder, "rows.db", *TABLES))}
        layouts["journal"] = journal(connect(folder, "journal.db", *TABLES), None)
        for every in map(int, args.every.split(",")):
            made = journal(connect(folder, f"journal{every}.db", *TABLES), every)
            layouts[f"journal + tables every {every}"] = made
        for _ in range(12):  # warm: past every file's first checkpoint (~1,000 pages)
            base()
            for run in layouts.values():
                run()
        floors: list[float] = []
        ratios: dict[str, list[float]] = {name: [] for name in layouts}
        for _ in range(args.rounds):
            for name, run in layouts.items():
                below = timed(base)
                floors.append(below)
                ratios[name].append(timed(run) / below)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"floor: {statistics.median(floors):.0f} µs a commit (median)")
    print(f"{'layout':32} {'÷ floor p50':>11} {'p25-p75':>11}")
    for name, values in ratios.items():
        ordered = sorted(values)
        low, high = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
        print(f"{name:32} {statistics.median(ordered):>10.2f}x {low:>5.2f}-{high:<5.2f}")
    print(f"(medians over {args.rounds} rounds of {STEPS} steps, each against a floor round)")


if __name__ == "__main__":
    main()
