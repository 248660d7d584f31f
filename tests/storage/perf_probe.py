"""Commit throughput probe for SqlStore (not collected by pytest: no test_ prefix).

    python -m tests.storage.perf_probe [sqlite|sqlite-normal|postgresql ...]

Each commit is one engine step: the execution row (last_sequence), one node upsert and one
event. "sequential" awaits each commit before the next; "100 concurrent" runs 100 executions
that each commit in a loop, which is where group commit pays off.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid

from agentrun.storage.records import (
    Batch,
    EventRecord,
    NodeRecord,
    NodeState,
)
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _batch(id: str, seq: int) -> Batch:
    return Batch(
        execution=execution_record(id, tenant="bench", input={"q": "x"}, last_sequence=seq),
        nodes=[
            NodeRecord(id, f"n{seq}", NodeState.SUCCEEDED, attempt=1, output={"text": "ok" * 20})
        ],
        events=[EventRecord(id, seq, "node.succeeded", time.time(), f"n{seq}", {"attempt": 1})],
    )


async def _committer(store: SqlStore, count: int) -> None:
    id = uuid.uuid4().hex
    await store.create_execution(execution_record(id, tenant="bench", input={"q": "x"}))
    for seq in range(1, count + 1):
        await store.commit(_batch(id, seq))


async def probe(url: str, synchronous: str = "FULL") -> dict[str, float]:
    store = SqlStore(url, synchronous=synchronous)
    await store.open()
    try:
        results = {}
        for label, tasks, per_task in (("sequential", 1, 500), ("100 concurrent", 100, 50)):
            groups = store.writer.groups
            started = time.perf_counter()
            await asyncio.gather(*(_committer(store, per_task) for _ in range(tasks)))
            elapsed = time.perf_counter() - started
            results[label] = tasks * per_task / elapsed
            results[f"{label} batches/txn"] = tasks * per_task / (store.writer.groups - groups)
        return results
    finally:
        await store.close()


async def _pg_database() -> tuple[str, str]:
    import asyncpg

    name = f"agentrun_perf_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def _drop(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def main(backends: list[str]) -> None:
    for backend in backends:
        if backend.startswith("sqlite"):
            with tempfile.TemporaryDirectory() as tmp:
                sync = "NORMAL" if backend == "sqlite-normal" else "FULL"
                results = await probe(f"sqlite+aiosqlite:///{tmp}/perf.db", sync)
        else:
            name, url = await _pg_database()
            try:
                results = await probe(url)
            finally:
                await _drop(name)
        line = ", ".join(f"{k}: {v:,.1f}" for k, v in results.items())
        print(f"{backend:14} commits/s  {line}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["sqlite", "sqlite-normal", "postgresql"]))
