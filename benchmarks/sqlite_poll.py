"""The SQLite notification poller's pass with many watched instances (`_RowPoll`,
agentrun/storage/notifications.py): CPU per pass on the loop's thread when another connection
committed before every pass (as a busy server's own writer does), N watched instances.

    .venv/bin/python benchmarks/sqlite_poll.py [--watched 10000] [--passes 60] [--folder /dev/shm]

Prints the median and the worst CPU time of a pass (process time, so a loaded machine moves
it less than wall time would). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
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

from agentrun.storage import notifications
from agentrun.storage.sql import SqlStore

_INSERT = (
    "INSERT INTO sm_instances (id, tenant, workflow, version, state, current, data,"
    " created_at, updated_at, last_sequence, entry_sequence, lease_epoch)"
    " VALUES (?, 't', 'wf', 1, 'ACTIVE', 'a', '{}', 1.0, 1.0, 1, 1, 0)"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watched", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=60)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "poll.db"

        async def migrate() -> None:
            store = SqlStore(f"sqlite+aiosqlite:///{path}")
            await store.open()
            await store.close()

        asyncio.run(migrate())
        keys = [f"in-{n:06d}" for n in range(args.watched)]
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN")
        writer.executemany(_INSERT, [(key,) for key in keys])
        writer.execute("COMMIT")
        reader = sqlite3.connect(path, isolation_level=None)
        poll = notifications._RowPoll()
        poll.start(reader, keys)
        cpu = []
        for n in range(args.passes):
            writer.execute(
                "UPDATE sm_instances SET last_sequence = last_sequence + 1 WHERE id = ?",
                (keys[(n * 997) % len(keys)],),
            )
            started = time.process_time()
            poll.new_rows(reader, set(), keys)
            cpu.append(time.process_time() - started)
        writer.close()
        reader.close()
    print(
        f"{args.watched} watched, a commit before each of {args.passes} passes: CPU per pass "
        f"median {statistics.median(cpu) * 1e3:.2f} ms, worst {max(cpu) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
