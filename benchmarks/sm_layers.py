"""Where a state machine event's time goes on SQLite, layer by layer, beside the floor.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/sm_layers.py                    # in a temp folder
    PYTHONPATH=$PWD .venv/bin/python benchmarks/sm_layers.py --folder /dev/shm  # no disk wait

benchmarks/step_floor.py says how far one instance's event is from a raw INSERT + COMMIT (issue
18's "state machine, one instance" row); this says which layer the difference is in, so a
change can be aimed at it. Rounds of 100, alternating, each layer on the same instance of
step_floor's cycle machine (per event, µs; wall clock and the process's CPU time):
- event: `MachineEngine.send_event`, as step_floor measures it;
- store: the same batches (the engine's `quick` step, computed before the round) through
  `MachineEngine.write_at_once`, the store's write at once (`SqliteWrites.write_now`), or its
  group commit when that refuses: what the store's layers cost, the engine's left out;
- statements: the same batches as `BEGIN IMMEDIATE`, `sqlite_instances.write_one`, `COMMIT` on
  a sqlite3 connection of its own to the store's file: the statements and their pages alone;
- floor: step_floor's, one INSERT + COMMIT on a file of its own in the same folder.
event - store is the engine's part, store - statements the store's layers (on a disk, also
the batches the writer thread wrote: counted), statements - floor the rows and pages. Each
row's median over the rounds; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from agentrun.storage.sqlite_writes import AUTOCHECKPOINT_PAGES
from benchmarks.step_floor import STEPS, close_engine, open_engine, sqlite_floor

LAYERS = ("event", "store", "statements", "floor")


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """One round of STEPS: (wall µs, the process's CPU µs) per step."""
    wall, cpu = time.perf_counter(), time.process_time()
    await run()
    return (
        (time.perf_counter() - wall) / STEPS * 1e6,
        (time.process_time() - cpu) / STEPS * 1e6,
    )


def side_connection(path: str) -> sqlite3.Connection:
    """A sqlite3 connection of its own to the store's file, writing as the store's writer
    does: synchronous=FULL, reference checks off (`checked`), and SQLite's own checkpoint only
    as a backstop (at its default, 1,000 pages, nearly every commit here found the store's WAL
    longer and checkpointed)."""
    side = sqlite3.connect(path, isolation_level=None)
    side.execute("PRAGMA synchronous=FULL")
    side.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    side.execute("PRAGMA foreign_keys=OFF")
    return side


def run_layers(
    measure: Callable[[str, int], Coroutine[Any, Any, dict[str, list[tuple[float, float]]]]],
    layers: tuple[str, ...],
    name: str,
    doc: str,
) -> None:
    """The command line of a layers script: `measure(folder, rounds)` in a temporary folder,
    then each layer's medians (the last layer is the floor)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--folder", help="where the SQLite files go (e.g. /dev/shm)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix=f"agentrun-{name}-", dir=args.folder)
    try:
        out = asyncio.run(measure(folder, args.rounds))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    floor_wall = statistics.median(w for w, _ in out[layers[-1]])
    print(f"{'layer':12} {'wall µs':>8} {'CPU µs':>8} {'wall / floor':>12}")
    for layer in layers:
        wall = statistics.median(w for w, _ in out[layer])
        cpu = statistics.median(c for _, c in out[layer])
        print(f"{layer:12} {wall:8.0f} {cpu:8.0f} {wall / floor_wall:11.2f}x")
    print(f"(medians over {args.rounds} alternating rounds of {STEPS} steps; see the docstring)")


def batches(machines: Any, instance_id: str) -> list[Any]:
    """The instance's next STEPS events as the engine's quick path makes them (each on the
    record after the one before); the instance's record moves on to the last one's."""
    from agentrun.storage.machine_base import MachineBatch

    inst = machines.instances[instance_id]
    record, made = inst.record, []
    for _ in range(STEPS):
        work = machines.stepper.quick(inst.plan, record, "NEXT", None, None, time.time())
        record = work.snapshot()
        batch = MachineBatch(record, work.entries, work.timers, work.fired, fence=inst.fence)
        made.append(batch)
    inst.record = record
    return made


async def measure(folder: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    from agentrun.storage.sqlite_instances import write_one

    store, engine, machines = await open_engine(f"sqlite+aiosqlite:///{folder}/store.db")
    try:
        instance_id = (await machines.create_instance("cycle")).id
        floor = sqlite_floor(folder)
        side = side_connection(f"{folder}/store.db")

        async def event() -> None:
            for _ in range(STEPS):
                await machines.send_event(instance_id, "NEXT", None)

        async def through_store(made: list[Any]) -> None:
            for batch in made:
                if not machines.write_at_once(batch):
                    await machines.store.commit(batch)

        async def statements(made: list[Any]) -> None:
            for batch in made:
                side.execute("BEGIN IMMEDIATE")
                assert write_one(batch, side)
                side.execute("COMMIT")

        for _ in range(3):  # warm: the instance's pages, the floor's WAL (sqlite_floor)
            await event()
        out: dict[str, list[tuple[float, float]]] = {layer: [] for layer in LAYERS}
        written_now = machines.store._written_now
        for _ in range(rounds):
            out["event"].append(await timed(event))
            made = batches(machines, instance_id)
            out["store"].append(await timed(functools.partial(through_store, made)))
            made = batches(machines, instance_id)
            out["statements"].append(await timed(functools.partial(statements, made)))
            out["floor"].append(await timed(floor))
        threaded = 2 * rounds * STEPS - (machines.store._written_now - written_now)
        print(f"events and store batches not written at once (group commit): {threaded}")
        side.close()
        return out
    finally:
        await close_engine(store, engine, machines)


def main() -> None:
    run_layers(measure, LAYERS, "sm-layers", __doc__ or "")


if __name__ == "__main__":
    main()
