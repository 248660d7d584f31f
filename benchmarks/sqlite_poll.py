"""The SQLite notification poller (`_RowPoll`, agentrun/storage/sqlite_poll.py) with many
watched executions: how many passes an event committed by another connection waits before a
pass announces it, and the CPU a pass costs the loop's thread, for each watched count.

    .venv/bin/python benchmarks/sqlite_poll.py [--watched 500,2000,5000,10000]
        [--events 200] [--busy 1] [--folder /dev/shm]

Each watched count gets a fresh file of that many executions, all watched (as the hub's
subscriptions, a dict's keys), plus `--busy` nobody watches. Before every pass a busy writer
commits an event of each unwatched execution, in one transaction (a busy server's own writer
commits between any two passes, so every pass sees another connection's commit); before one pass in three, an event
of a watched execution chosen at random is committed too. The delay of such an event is
counted in passes, from the commit to the pass that announces it, and shown as time at
SQLITE_POLL_SECONDS a pass (an upper bound: the commit is taken to land just after the pass
before). CPU is process time around `new_rows`, so a loaded machine moves it less than wall
time would. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from agentrun.storage import sqlite_poll
from agentrun.storage.sql import SqlStore

_EXECUTION = (
    "INSERT INTO executions (id, tenant, workflow, version, state, created_at, last_sequence)"
    " VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0, 0)"
)
_EVENT = "INSERT INTO events (execution_id, sequence, type, time) VALUES (?, ?, 'x', 1.0)"
_MOVED = "UPDATE executions SET last_sequence = ? WHERE id = ?"


def _commit(writer: sqlite3.Connection, keys: list[str], sequences: dict[str, int]) -> None:
    """One commit of an event of each of `keys`, as a store's commit writes one: the event and
    the execution's `last_sequence`."""
    writer.execute("BEGIN")
    for key in keys:
        sequences[key] += 1
        writer.execute(_EVENT, (key, sequences[key]))
        writer.execute(_MOVED, (sequences[key], key))
    writer.execute("COMMIT")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(watched: int, events: int, busy: int, folder: str | None) -> tuple[list[int], list[float]]:
    """The delays (in passes) of `events` events of watched executions, and each pass's CPU."""
    with tempfile.TemporaryDirectory(dir=folder) as where:
        path = Path(where) / "poll.db"

        async def migrate() -> None:
            store = SqlStore(f"sqlite+aiosqlite:///{path}")
            await store.open()
            await store.close()

        asyncio.run(migrate())
        keys = [f"ex-{n:06d}" for n in range(watched)]
        unwatched = [f"busy-{n:06d}" for n in range(busy)]
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN")
        writer.executemany(_EXECUTION, [(key,) for key in [*keys, *unwatched]])
        writer.execute("COMMIT")
        reader = sqlite3.connect(path, isolation_level=None)
        subscribed = dict.fromkeys(keys).keys()
        poll = sqlite_poll._RowPoll()
        poll.start(reader)
        rng = random.Random(watched)
        sequences = dict.fromkeys([*keys, *unwatched], 0)
        waiting: dict[str, int] = {}  # key -> the pass before which its event was committed
        delays: list[int] = []
        cpu: list[float] = []
        sent = 0
        n = 0
        while sent < events or waiting:
            if n > 100 * events:
                raise SystemExit(f"{len(waiting)} events never announced")
            _commit(writer, unwatched, sequences)
            if sent < events and n % 3 == 0:
                key = rng.choice(keys)
                if key not in waiting:
                    _commit(writer, [key], sequences)
                    waiting[key] = n
                    sent += 1
            started = time.process_time()
            found = poll.new_rows(reader, set(), subscribed)
            cpu.append(time.process_time() - started)
            for kind, key in found:
                if kind == "events" and key in waiting:
                    delays.append(n - waiting.pop(key) + 1)
            n += 1
        writer.close()
        reader.close()
    return delays, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watched", default="500,2000,5000,10000")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--busy", type=int, default=1)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    period = sqlite_poll.SQLITE_POLL_SECONDS
    print(f"{args.busy} unwatched events committed before each pass")
    print(
        f"{'watched':>8} {'passes p50':>10} {'p99':>5} {'max':>5} {'delay p50':>10} "
        f"{'p99':>8} {'CPU/pass p50':>13} {'p99':>8} {'max':>8}"
    )
    for watched in [int(w) for w in args.watched.split(",")]:
        delays, cpu = run(watched, args.events, args.busy, args.folder)
        d50, d99 = (
            _quantile([float(d) for d in delays], 0.5),
            _quantile([float(d) for d in delays], 0.99),
        )
        print(
            f"{watched:>8} {d50:>10.0f} {d99:>5.0f} {max(delays):>5} "
            f"{d50 * period * 1e3:>8.0f}ms {d99 * period * 1e3:>6.0f}ms "
            f"{statistics.median(cpu) * 1e3:>11.3f}ms {_quantile(cpu, 0.99) * 1e3:>6.3f}ms "
            f"{max(cpu) * 1e3:>6.3f}ms"
        )


if __name__ == "__main__":
    main()
