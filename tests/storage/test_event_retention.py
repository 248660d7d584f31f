"""Event retention: partitions (PostgreSQL) or rows (SQLite, memory) of executions that ended
long ago go; anything still running, or ended recently, stays."""

from __future__ import annotations

import datetime

from agentrun.storage.base import Store
from agentrun.storage.records import Batch, EventRecord, ExecutionState
from tests.storage.factories import execution_record

DAY = 86_400.0
NOW = datetime.datetime(2026, 11, 25, 12, tzinfo=datetime.UTC).timestamp()


def _id(created: float, tail: str) -> str:
    return f"{int(created * 1000):012x}{tail}"


async def _execution(
    store: Store, created: float, tail: str, state: ExecutionState, ended: float | None
) -> str:
    record = execution_record(_id(created, tail), tenant="t", workflow="w", created_at=created)
    await store.create_execution(
        record, events=[EventRecord(record.id, 1, "execution.pending", created)]
    )
    record.state, record.ended_at, record.last_sequence = state, ended, 2
    await store.commit(
        Batch(execution=record, events=[EventRecord(record.id, 2, "x", created + 1)])
    )
    return record.id


async def test_old_ended_events_go_running_and_recent_stay(store: Store) -> None:
    # Partitions for the days around "then" first (PostgreSQL), as a running server has them.
    await store.maintain_events(now=NOW - 10 * DAY, retention_seconds=None)
    old_done = await _execution(
        store, NOW - 10 * DAY, "aa", ExecutionState.SUCCEEDED, NOW - 10 * DAY + 5
    )
    old_running = await _execution(store, NOW - 9 * DAY, "bb", ExecutionState.RUNNING, None)
    await store.maintain_events(now=NOW, retention_seconds=None)
    recent_done = await _execution(store, NOW - 60, "cc", ExecutionState.FAILED, NOW - 30)
    assert await store.maintain_events(now=NOW, retention_seconds=None) == 0  # nothing dropped
    dropped = await store.maintain_events(now=NOW, retention_seconds=3 * DAY)
    assert dropped >= 1
    assert await store.list_events(old_done) == []
    assert [e.sequence for e in await store.list_events(old_running)] == [1, 2]
    assert [e.sequence for e in await store.list_events(recent_done)] == [1, 2]
    # The executions themselves stay.
    assert (await store.get_execution(old_done)).state is ExecutionState.SUCCEEDED
