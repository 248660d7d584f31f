"""Child process for test_durability.py: commits batches in a loop until it is killed.

Prints the number of each batch after its `commit` returned, so the parent knows what the
store promised to keep. Not a test module (pytest does not collect it).
"""

from __future__ import annotations

import asyncio
import sys
import time

from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    NodeRecord,
    NodeState,
)
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record

EXECUTION_ID = "ex-crash"


def execution(last_sequence: int) -> ExecutionRecord:
    return execution_record(EXECUTION_ID, input={}, last_sequence=last_sequence)


def batch(i: int) -> Batch:
    return Batch(
        execution=execution(i),
        nodes=[NodeRecord(EXECUTION_ID, f"n{i:06d}", NodeState.SUCCEEDED, output={"i": i})],
        events=[EventRecord(EXECUTION_ID, i, "node.succeeded", time.time(), node_id=f"n{i:06d}")],
    )


async def main(url: str) -> None:
    store = SqlStore(url)
    await store.open()
    await store.create_execution(execution(0))
    i = 0
    while True:
        i += 1
        await store.commit(batch(i))
        print(i, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
