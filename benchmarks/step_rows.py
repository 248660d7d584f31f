"""A chain step's own rows written without the runtime, beside the floor and the chain, in one
run: how much of the chain's ratio to the floor is what a step stores, and how much the runtime.

    .venv/bin/python benchmarks/step_rows.py [--rounds 15] [--folder /dev/shm] [--cpu]

step_floor.py compares a SQLite chain step with one raw INSERT + COMMIT (issue 18: <= 1.5x).
A step stores more than that row: its node and its events, each table with its key's index
(~5 WAL frames a step, benchmarks/wal_frames.py, against the floor's 1). This script records
the batches of one chain execution as the engine commits them (`Store.commit_at_once` and
`Store.commit`), then replays them step by step, each as BEGIN IMMEDIATE + the store's own
`write_turn` (sqlite_turns.py: the same statements and parameters) + COMMIT, on a plain sqlite3
connection to a second store file (the same schema; WAL, synchronous=FULL; SQLite's own
checkpoints, as the floor has), each round under an execution of its own created beforehand.
Three rows, their rounds alternating (a change in the machine's load shows in all three):

- floor: step_floor's 100 raw INSERT + COMMIT, per commit;
- rows: the replay, per step: what SQLite and the rows' parameters cost, no engine;
- chain: step_floor's chain of 100 stored tool steps, per step.

rows ÷ floor is the part of the chain's ratio its data model costs; chain ÷ rows is what the
runtime adds on top (the engine's turn, the commit's way to the disk, publishing). Nothing is
asserted; the table is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# benchmarks/grpc.py would shadow the grpc package: take this folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from agentrun.engine import Engine, load_workflow
from agentrun.engine.tuning import tune_gc
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.factory import open_store
from agentrun.storage.records import Batch, ExecutionRecord
from agentrun.storage.sqlite_turns import write_turn
from benchmarks.engine import stored_echo
from benchmarks.step_floor import STEPS, chain_round, chain_yaml, quartiles, sqlite_floor

CLOCK: Callable[[], float] = time.perf_counter


async def record_chain(url: str) -> tuple[Any, Engine, ExecutionRecord, list[Batch]]:
    """An engine on `url` with the chain registered, and one execution of it run to its end:
    its record as created and the batches its turns committed, in order."""
    store = await open_store(url)
    recording: list[Batch] = []
    at_once, commit = store.commit_at_once, store.commit
    assert at_once is not None, "a SQLite store writes turns at once"

    def at_once_recorded(batch: Batch) -> bool:
        written = at_once(batch)
        if written:
            recording.append(batch)
        return written

    async def commit_recorded(batch: Batch) -> None:
        await commit(batch)
        recording.append(batch)

    store.commit_at_once = at_once_recorded
    store.commit = commit_recorded  # type: ignore[method-assign]
    engine = Engine(store, tools=Registry([*core_tools(), stored_echo()]), agents=default_agents())
    await engine.start()
    await engine.create_workflow(load_workflow(chain_yaml("chain", STEPS)))
    tune_gc()
    execution = await engine.start_execution("chain", {})
    final = await engine.wait(execution.id)
    assert final.state.value == "SUCCEEDED", final.state
    store.commit_at_once, store.commit = at_once, commit  # type: ignore[method-assign]
    created = await store.get_execution(execution.id)
    assert created is not None
    mine = [b for b in recording if b.execution is not None and b.execution.id == execution.id]
    return store, engine, execution, mine


def _as(execution_id: str, batch: Batch) -> Batch:
    """`batch` for another execution: every row's execution id replaced."""
    assert batch.execution is not None
    return dataclasses.replace(
        batch,
        execution=dataclasses.replace(batch.execution, id=execution_id),
        nodes=[dataclasses.replace(n, execution_id=execution_id) for n in batch.nodes],
        events=[dataclasses.replace(e, execution_id=execution_id) for e in batch.events],
    )


async def replay_rounds(
    folder: str, created: ExecutionRecord, batches: list[Batch], rounds: int
) -> Callable[[], float]:
    """Per step, in µs: one round replays `batches` under an execution of its own (made first
    through a store on a second file, as `created` was: same owner and lease epoch, so each
    batch's fence holds), one transaction a batch, on a plain sqlite3 connection."""
    url = f"sqlite+aiosqlite:///{folder}/rows.db"
    store = await open_store(url)
    ids: list[str] = []
    try:
        for n in range(rounds):
            execution_id = f"{created.id[:-6]}{n:06d}"
            record = dataclasses.replace(created, id=execution_id, request_id=None)
            await store.create_execution(record)
            ids.append(execution_id)
    finally:
        await store.close()
    conn = sqlite3.connect(os.path.join(folder, "rows.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    cursor = conn.cursor()
    # Built before the rounds: the replay times what the store runs for a batch, not the copy.
    prepared = [[_as(i, b) for b in batches] for i in ids]

    def run() -> float:
        steps = prepared.pop(0)
        started = CLOCK()
        for batch in steps:
            cursor.execute("BEGIN IMMEDIATE")
            if not write_turn(batch, conn):
                raise RuntimeError("a replayed batch was refused")
            cursor.execute("COMMIT")
        return (CLOCK() - started) / len(steps) * 1e6

    return run


async def measure(folder: str, rounds: int) -> dict[str, list[float]]:
    warm = 3
    store, engine, created, batches = await record_chain(f"sqlite+aiosqlite:///{folder}/s.db")
    try:
        floor = sqlite_floor(folder)
        chain = chain_round(engine)
        rows = await replay_rounds(folder, created, batches, rounds + warm)
        times: dict[str, list[float]] = {"floor": [], "rows": [], "chain": []}
        for n in range(rounds + warm):
            measured = {"floor": await floor(), "rows": rows(), "chain": await chain()}
            if n >= warm:
                for name, value in measured.items():
                    times[name].append(value)
        print(f"(recorded: {len(batches)} batches for {STEPS} steps)")
        return times
    finally:
        await engine.stop(grace=0)
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--folder", help="where the SQLite files go (e.g. /dev/shm)")
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of wall clock")
    args = parser.parse_args()
    if args.cpu:
        global CLOCK
        CLOCK = time.process_time
        from benchmarks import step_floor

        step_floor.CLOCK = time.process_time
    folder = tempfile.mkdtemp(prefix="agentrun-step-rows-", dir=args.folder)
    try:
        times = asyncio.run(measure(folder, args.rounds))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    unit = "CPU µs" if args.cpu else "µs"
    floors = times["floor"]
    print(
        f"{'row':8} {unit + ' a step':>12} {'÷ floor p50':>12} {'p25-p75':>11} {'÷ rows p50':>11}"
    )
    for name, values in times.items():
        to_floor = sorted(v / f for v, f in zip(values, floors, strict=True))
        to_rows = sorted(v / r for v, r in zip(values, times["rows"], strict=True))
        low, high = quartiles(to_floor)
        print(
            f"{name:8} {statistics.median(values):>12,.0f} {statistics.median(to_floor):>11.2f}x "
            f"{low:>5.2f}-{high:<5.2f} {statistics.median(to_rows):>10.2f}x"
        )
    print(
        f"(medians over {args.rounds} rounds of {STEPS} steps, the three rows' rounds back to "
        "back; ÷: each round against the floor's or the rows' round of the same turn)"
    )


if __name__ == "__main__":
    main()
