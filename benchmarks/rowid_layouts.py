"""SQLite `events`, `nodes` and `sm_history`: a rowid table against a WITHOUT ROWID one, in the
same run, by the size of the payload a row carries and by how many executions (instances)
write at once. Migrations 0018, 0022 and 0024 made them WITHOUT ROWID on tiny-row benchmarks;
0025 made them rowid tables again on these numbers.

    .venv/bin/python benchmarks/rowid_layouts.py [--tables events,nodes,sm_history]
        [--sizes 100,1000,5000] [--writers 1,10] [--folder /dev/shm] [--keyed]

A step is one commit, round-robin over N executions or instances (N writing at once):

- events: the execution's row (`last_sequence`) and three events, the second carrying
  `{"output": "x" * SIZE}` (node.succeeded), the others `{"attempt": 1}` (as a step writes them).
- nodes: the execution's row, the node that ended (its `output` set to the payload) and the
  next one inserted (its `input` the payload): a chain step's two node writes.
- sm_history: the instance's row (`current`, `updated_at`, `last_sequence`) and one history
  entry whose `event_data` is the payload (`actions` and `assigned` small).

Frames: the WAL's size after STEPS steps that follow WARM and a TRUNCATE checkpoint, divided
by the frame size, per step. Pages: the file's pages in use (page_count - freelist_count)
after, per 1,000 rows of the table. Both layouts are built from the store's own schema (a file
migrated to the head), the table rebuilt from its stored definition with or without
`WITHOUT ROWID` and its indexes made again. Nothing is asserted.

Why it differs: a WITHOUT ROWID table is an index b-tree, whose cells keep at most ~1,000
bytes of a row on a 4 KiB page (a rowid table's leaf keeps ~4,000) before the rest goes to
overflow pages of their own; and its rows are in key order, so writers at once fill and split
one leaf each where the rowid table appends to one leaf and its key index takes small entries.

`--keyed` adds a third layout for `events` and `sm_history`: a rowid table without its key's
index, the rowid made of the key (execution or instance number << 32 | sequence), so a step
writes one b-tree where the rowid table writes two and keeps the rowid table's ~4,000 bytes in
place. Measured 7 Dec 2026 (`--keyed --folder /dev/shm`, frames a step, rowid -> keyed):
one writer, 100 B / 1 KB / 5 KB: sm_history 3.17 -> 2.09, 3.75 -> 2.67, 5.32 -> 4.25; events
3.48 -> 2.19, 4.29 -> 3.00, 5.95 -> 4.67. Ten writers: sm_history 3.14 -> 3.04, 3.72 -> 4.76
(+28%), 5.30 -> 6.44 (+22%); events 3.44 -> 3.67, 4.25 -> 5.11 (+20%), 5.91 -> 6.77 (+15%).
With several writers each one's rows go to the middle of the b-tree, where a full leaf is
rebalanced with its siblings (three leaves and their parent written) instead of a new page
appended at the right edge: a win for one writer only. SQLite's poller also reads new rows by
rowid, which such rowids do not order by time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
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


def _layout(conn: sqlite3.Connection, table: str, *, rowid: bool, keyed: bool = False) -> None:
    """`table` (empty) rebuilt from its stored definition with or without rowids; `keyed`: a
    rowid table without its primary key's constraint (and so without its index)."""
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    indexes = [
        row[0]
        for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (table,),
        )
    ]
    body = sql[sql.index("(") : sql.rindex(")") + 1]
    if keyed:
        body = re.sub(r"CONSTRAINT pk_\w+ PRIMARY KEY \([^)]*\),\s*", "", body)
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"CREATE TABLE {table} {body}{'' if rowid else ' WITHOUT ROWID'}")
    for index in indexes:
        conn.execute(index)


# (connection, execution or instance id, its last sequence, payload, keyed) -> rows written;
# `keyed`: the keyed layout, whose rowid the step gives (`_key`).
Step = Callable[[sqlite3.Connection, str, int, str, bool], int]


def _key(ex: str, seq: int) -> int:
    """A keyed layout's rowid: the execution's (instance's) number, then its sequence."""
    return int(ex.rsplit("-", 1)[1]) << 32 | seq


def _keyed(keyed: bool, columns: str, values: str) -> tuple[str, str]:
    """An INSERT's column and value lists, with the rowid first in the keyed layout."""
    return (f"rowid, {columns}", f"?, {values}") if keyed else (columns, values)


def _events_step(conn: sqlite3.Connection, ex: str, seq: int, payload: str, keyed: bool) -> int:
    output, small = json.dumps({"output": payload}), json.dumps({"attempt": 1})
    conn.execute("UPDATE executions SET last_sequence = ? WHERE id = ?", (seq + 3, ex))
    columns, values = _keyed(
        keyed,
        "execution_id, sequence, type, node_id, data, time",
        "?, ?, 'node.succeeded', 'n', ?, 1.0",
    )
    for k in (1, 2, 3):
        params = (ex, seq + k, output if k == 2 else small)
        conn.execute(
            f"INSERT INTO events ({columns}) VALUES ({values})",
            (_key(ex, seq + k), *params) if keyed else params,
        )
    return 3


def _nodes_step(conn: sqlite3.Connection, ex: str, seq: int, payload: str, keyed: bool) -> int:
    data = json.dumps({"output": payload})
    conn.execute("UPDATE executions SET last_sequence = ? WHERE id = ?", (seq + 3, ex))
    conn.execute(
        "UPDATE nodes SET state = 'SUCCEEDED', output = ?, ended_at = 2.0"
        " WHERE execution_id = ? AND node_id = ?",
        (data, ex, f"n{seq:06d}"),
    )
    conn.execute(
        "INSERT INTO nodes (execution_id, node_id, state, attempt, input, started_at)"
        " VALUES (?, ?, 'RUNNING', 1, ?, 1.0)",
        (ex, f"n{seq + 3:06d}", data),
    )
    return 1


def _history_step(conn: sqlite3.Connection, ex: str, seq: int, payload: str, keyed: bool) -> int:
    conn.execute(
        "UPDATE sm_instances SET current = ?, updated_at = ?, last_sequence = ? WHERE id = ?",
        (f"s{seq % 3}", float(seq), seq + 1, ex),
    )
    columns, values = _keyed(
        keyed,
        "instance_id, sequence, kind, time, event, event_data, from_state, to_state,"
        " transition_index, actions, assigned, instance_state, reentered",
        "?, ?, 'transition', 1.0, 'go', ?, 's0', 's1', 0, '[\"notify\"]', '{\"n\": 1}',"
        " 'ACTIVE', 0",
    )
    params = (ex, seq + 1, json.dumps({"body": payload}))
    conn.execute(
        f"INSERT INTO sm_history ({columns}) VALUES ({values})",
        (_key(ex, seq + 1), *params) if keyed else params,
    )
    return 1


# The tables the keyed layout applies to (nodes are keyed by a name, not a sequence).
KEYED_TABLES = frozenset({"events", "sm_history"})

STEPS_BY_TABLE: dict[str, Step] = {
    "events": _events_step,
    "nodes": _nodes_step,
    "sm_history": _history_step,
}


def measure(
    folder: str | None, table: str, size: int, writers: int, rowid: bool, keyed: bool = False
):
    """(WAL frames per step, pages in use per 1,000 rows of `table`); `keyed`: the keyed
    layout (`rowid` ignored)."""
    with tempfile.TemporaryDirectory(dir=folder) as where:
        path = Path(where) / "layout.db"
        asyncio.run(_migrated(path))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        _layout(conn, table, rowid=rowid or keyed, keyed=keyed)
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        ids = [f"ex-{n:04d}" for n in range(writers)]
        if table == "sm_history":
            conn.executemany(
                "INSERT INTO sm_instances (id, tenant, workflow, version, state, current,"
                " created_at, updated_at) VALUES (?, 't', 'wf', 1, 'ACTIVE', 's0', 1.0, 1.0)",
                [(i,) for i in ids],
            )
        else:
            conn.executemany(
                "INSERT INTO executions (id, tenant, workflow, version, state, created_at,"
                " last_sequence) VALUES (?, 't', 'wf', 1, 'RUNNING', 1.0, 0)",
                [(i,) for i in ids],
            )
        if table == "nodes":
            conn.executemany(
                "INSERT INTO nodes (execution_id, node_id, state, attempt, started_at)"
                " VALUES (?, 'n000000', 'RUNNING', 1, 1.0)",
                [(i,) for i in ids],
            )
        payload, write = "x" * size, STEPS_BY_TABLE[table]
        last, rows = dict.fromkeys(ids, 0), 0

        def step(n: int) -> int:
            ex = ids[n % writers]
            conn.execute("BEGIN")
            written = write(conn, ex, last[ex], payload, keyed)
            conn.execute("COMMIT")
            last[ex] += 3
            return written

        for n in range(WARM):
            rows += step(n)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(WARM, WARM + STEPS):
            rows += step(n)
        frames = (os.path.getsize(f"{path}-wal") - 32) / (page + 24) / STEPS
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used = conn.execute("PRAGMA page_count").fetchone()[0]
        used -= conn.execute("PRAGMA freelist_count").fetchone()[0]
        conn.close()
        return frames, used * 1000 / rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", default="events,nodes,sm_history")
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--writers", default="1,10")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--folder", default=None)
    parser.add_argument("--keyed", action="store_true", help="add the keyed layout (see above)")
    args = parser.parse_args()
    print(
        "table       writers  payload B   frames/step rowid -> without"
        "   pages/1000 rows rowid -> without"
        + ("   keyed: frames/step, pages/1000 rows" if args.keyed else "")
    )
    for table in args.tables.split(","):
        keyed = args.keyed and table in KEYED_TABLES
        for writers in (int(n) for n in args.writers.split(",")):
            for size in (int(n) for n in args.sizes.split(",")):
                runs = [
                    (
                        measure(args.folder, table, size, writers, rowid=True),
                        measure(args.folder, table, size, writers, rowid=False),
                        measure(args.folder, table, size, writers, rowid=True, keyed=True)
                        if keyed
                        else (0.0, 0.0),
                    )
                    for _ in range(args.repeat)
                ]
                f0 = statistics.median(r[0][0] for r in runs)
                p0 = statistics.median(r[0][1] for r in runs)
                f1 = statistics.median(r[1][0] for r in runs)
                p1 = statistics.median(r[1][1] for r in runs)
                line = (
                    f"{table:<10}  {writers:>7}  {size:>8}   {f0:>6.2f} -> {f1:<6.2f}"
                    f" ({f1 / f0 - 1:+4.0%})      {p0:>7.0f} -> {p1:<7.0f} ({p1 / p0 - 1:+.0%})"
                )
                if keyed:
                    f2 = statistics.median(r[2][0] for r in runs)
                    p2 = statistics.median(r[2][1] for r in runs)
                    line += f"   {f2:>6.2f} ({f2 / f0 - 1:+4.0%}), {p2:>7.0f} ({p2 / p0 - 1:+.0%})"
                print(line)


if __name__ == "__main__":
    main()
