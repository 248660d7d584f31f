"""What `next_lease_expiry` reads (not collected by pytest: no test_ prefix).

    python -m tests.storage.lease_probe [sqlite] [postgresql] [--finished N] [--mine N]

Fills a migrated database with N finished executions (their owners kept, as a finished
execution keeps its last owner), `--mine` unfinished ones held by replica "a" (idle: WAITING),
200 held by "b" and 20 not owned (PENDING), then shows the plan of `next_lease_expiry("a")`
and what it reads: on SQLite the query plan and the virtual machine's steps (a progress handler
called at every step); on PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)` (rows each node returns, rows
a filter removed, pages read), for a custom plan and a generic one (asyncpg prepares it).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import uuid
from typing import Any

import sqlalchemy as sa

from agentrun.storage import execution_leases
from agentrun.storage import schema as db
from agentrun.storage.sql import SqlStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
_OWNERS = ("a", "b", "c")


def _rows(finished: int, mine: int) -> list[dict[str, Any]]:
    rows = []

    def add(state: str, owner: str | None, lease: float | None) -> None:
        rows.append(
            {
                "id": f"ex-{len(rows):07d}",
                "tenant": "t",
                "workflow": "wf",
                "version": 1,
                "state": state,
                "created_at": 1.0,
                "owner": owner,
                "lease_expires_at": lease,
                "ended_at": 2.0 if state == "SUCCEEDED" else None,
            }
        )

    for i in range(finished):
        add("SUCCEEDED", _OWNERS[i % 3], 0.0)
    for _ in range(mine):
        add("WAITING", "a", 1000.0)
    for i in range(200):
        add("RUNNING", "b", 900.0 + i)
    for _ in range(20):
        add("PENDING", None, None)
    return rows


def _literal(statement: sa.Select[Any], dialect: sa.engine.Dialect) -> str:
    bound = statement.params(b_owner="a")
    return str(bound.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def _fill(url: str, finished: int, mine: int) -> None:
    store = SqlStore(url)
    await store.open()  # migrates
    rows = _rows(finished, mine)
    replicas = [{"id": "a", "lease_expires_at": 950.0}, {"id": "b", "lease_expires_at": 950.0}]

    def insert(conn: sa.Connection) -> None:
        for start in range(0, len(rows), 5000):
            conn.execute(db.executions.insert(), rows[start : start + 5000])
        conn.execute(db.replica_leases.insert(), replicas)

    await store.database.transaction(insert)
    assert await store.next_lease_expiry("a") == 0.0  # the unowned rows
    await store.close()


def probe_sqlite(finished: int, mine: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/probe.db"
        asyncio.run(_fill(f"sqlite+aiosqlite:///{path}", finished, mine))
        from sqlalchemy.dialects import sqlite

        text = _literal(execution_leases._NEXT_EXPIRY, sqlite.dialect())
        conn = sqlite3.connect(path)
        print("SQLite EXPLAIN QUERY PLAN:")
        for row in conn.execute("EXPLAIN QUERY PLAN " + text):
            print("   ", row[3])
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(count, 1)
        (value,) = conn.execute(text).fetchone()
        conn.set_progress_handler(None, 1)
        print(f"    result {value}, {steps:,} VM steps")
        conn.close()


async def probe_postgres(finished: int, mine: int) -> None:
    import asyncpg
    from sqlalchemy.dialects import postgresql

    name = f"agentrun_probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await _fill(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", finished, mine)
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        try:
            await conn.execute("ANALYZE")
            text = _literal(execution_leases._NEXT_EXPIRY, postgresql.dialect())
            print("PostgreSQL EXPLAIN (ANALYZE, BUFFERS), custom plan:")
            for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + text):
                print("   ", row[0])
            generic = text.replace("'a'", "$1::varchar")
            await conn.execute(f"PREPARE q(varchar) AS {generic}")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            print("PostgreSQL EXPLAIN (ANALYZE, BUFFERS), generic plan:")
            for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q('a')"):
                print("   ", row[0])
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backends", nargs="*", default=["sqlite", "postgresql"])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--mine", type=int, default=2_000)
    args = parser.parse_args()
    print(f"{args.finished:,} finished, {args.mine:,} held by a, 200 by b, 20 unowned")
    for backend in args.backends:
        if backend == "sqlite":
            probe_sqlite(args.finished, args.mine)
        else:
            asyncio.run(probe_postgres(args.finished, args.mine))


if __name__ == "__main__":
    main()
