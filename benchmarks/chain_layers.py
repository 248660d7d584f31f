"""Where a chain step's time goes on SQLite, layer by layer, beside the floor: the chain's
counterpart of sm_layers.py.

    .venv/bin/python benchmarks/chain_layers.py                    # in a temp folder
    .venv/bin/python benchmarks/chain_layers.py --folder /dev/shm  # no disk wait

step_floor.py compares a SQLite chain step with one raw INSERT + COMMIT (issue 18: <= 1.5x). A
step stores more than that row: its node rows and its events, each table with its key's index
(~5 WAL frames a step, benchmarks/wal_frames.py, against the floor's 1). This says which layer
the difference is in. It records the batches of one chain execution as the engine commits them
(`Store.commit_at_once`, `Store.commit`), then, in alternating rounds of 100 steps (per step, µs;
wall clock and the process's CPU time):
- chain: step_floor's chain, one execution of 100 stored tool steps, start to end;
- store: the recorded batches, under an execution of their own made beforehand, through the
  store's write at once (`Store.commit_at_once`) or its group commit when that refuses: the
  store's layers, the engine left out;
- statements: the same batches as `BEGIN IMMEDIATE`, the store's own `write_turn`
  (sqlite_turns.py: its statements and parameters), `COMMIT` on a sqlite3 connection of its own
  to the store's file: the rows and their pages alone;
- floor: step_floor's, one INSERT + COMMIT on a file of its own in the same folder.
chain - store is the engine's part, store - statements the store's layers, statements - floor
what the rows a step stores cost. Each row's median over the rounds; compare rows of one run.

Measured 7 Dec 2026 on this VM's disk (two runs of 11 rounds, the machine otherwise idle; floor
226-263 µs): chain 2.62-2.63x, store 1.89-1.99x, statements 1.80-2.02x. The rows a step stores
cost more than issue 18's 1.5x by themselves, before any of the runtime's work;
journal_layout.py measures what another layout would.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from agentrun.storage.records import Batch
from agentrun.storage.sqlite_turns import write_turn
from benchmarks.sm_layers import run_layers, side_connection, timed
from benchmarks.step_floor import STEPS, chain_round, close_engine, open_engine, sqlite_floor

LAYERS = ("chain", "store", "statements", "floor")
# The replayed executions' owner: leased far ahead, so the engine beside them never claims one.
OWNER = ("replay", 1)


def recorder(store: Any) -> tuple[list[Batch], Callable[[], None]]:
    """Records every batch the engine commits from now on (`Store.commit_at_once` and
    `Store.commit`) into the list; the function stops it."""
    recording: list[Batch] = []
    at_once, commit = store.commit_at_once, store.commit

    def at_once_recorded(batch: Batch) -> bool:
        written: bool = at_once(batch)
        if written:
            recording.append(batch)
        return written

    async def commit_recorded(batch: Batch) -> None:
        await commit(batch)
        recording.append(batch)

    def stop() -> None:
        store.commit_at_once, store.commit = at_once, commit

    store.commit_at_once, store.commit = at_once_recorded, commit_recorded
    return recording, stop


def moved(batches: list[Batch], execution_id: str) -> list[Batch]:
    """`batches` for another execution: every row's execution id and the fence replaced."""
    made = []
    for batch in batches:
        assert batch.execution is not None
        made.append(
            dataclasses.replace(
                batch,
                execution=dataclasses.replace(batch.execution, id=execution_id),
                nodes=[dataclasses.replace(n, execution_id=execution_id) for n in batch.nodes],
                events=[dataclasses.replace(e, execution_id=execution_id) for e in batch.events],
                fence=OWNER,
            )
        )
    return made


async def measure(folder: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    store, engine, machines = await open_engine(f"sqlite+aiosqlite:///{folder}/store.db")
    try:
        chain = chain_round(engine)
        floor = sqlite_floor(folder)
        for _ in range(3):  # warm: the store's pages, the floor's WAL (sqlite_floor)
            await chain()
            await floor()
        recording, stop = recorder(store)
        execution = await engine.start_execution("chain", {})
        await engine.wait(execution.id)
        stop()
        recorded = [b for b in recording if b.execution and b.execution.id == execution.id]
        created = await store.get_execution(execution.id)
        assert created is not None and len(recorded) >= STEPS, len(recorded)
        # Two executions a round (store, statements), made as the chain's was when it began.
        first = recorded[0].execution
        assert first is not None
        batches: list[list[Batch]] = []
        for n in range(2 * rounds):
            execution_id = f"{created.id[:-6]}{n:06d}"
            await store.create_execution(
                dataclasses.replace(
                    first,
                    id=execution_id,
                    request_id=None,
                    owner=OWNER[0],
                    lease_epoch=OWNER[1],
                    lease_expires_at=time.time() + 3600,
                )
            )
            batches.append(moved(recorded, execution_id))
        side = side_connection(f"{folder}/store.db")

        async def through_store(made: list[Batch]) -> None:
            at_once = store.commit_at_once
            for batch in made:
                if not at_once(batch):
                    await store.commit(batch)

        async def statements(made: list[Batch]) -> None:
            for batch in made:
                side.execute("BEGIN IMMEDIATE")
                assert write_turn(batch, side)
                side.execute("COMMIT")

        out: dict[str, list[tuple[float, float]]] = {layer: [] for layer in LAYERS}
        written_now = store.executions.written_now
        for n in range(rounds):
            out["chain"].append(await timed(chain))
            made = batches[2 * n]
            out["store"].append(await timed(functools.partial(through_store, made)))
            made = batches[2 * n + 1]
            out["statements"].append(await timed(functools.partial(statements, made)))
            out["floor"].append(await timed(floor))
        side.close()
        later = 2 * sum(map(len, batches[: 2 * rounds : 2])) - (
            store.executions.written_now - written_now
        )
        print(
            f"(a chain execution commits {len(recorded)} batches for its {STEPS} steps; of "
            f"the chain's and the store layer's, {later} not written at once: group commit)"
        )
        return out
    finally:
        await close_engine(store, engine, machines)


def main() -> None:
    run_layers(measure, LAYERS, "chain-layers", __doc__ or "")


if __name__ == "__main__":
    main()
