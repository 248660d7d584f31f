"""A Watch stream on an execution whose events event retention deleted (SQLite's
`maintain_events`: every event of an execution that ended before the retention, but the
table's newest row, kept for the poller's rowid mark; PostgreSQL drops the day's partition)
ends, or is refused: it must not wait forever.

It waited forever: `Reads.watch` (engine/runtime/reads.py) read the backlog (nothing), then
`finished(last)` held only when the ended record's `last_sequence <= last`, and no event past
`last` would ever come. The kept newest row is this execution's last event when it is the
newest execution of the file; with any newer execution the stream hung (here: one started
after it). Now an ended run with no stored entry past `last` is finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.errors import AgentrunError
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.sql import SqlStore
from tests.engine.test_idle_unload import APPROVE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def engine(tmp_path: Any) -> AsyncIterator[Engine]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/retention.db")
    await store.open()
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id="serve", seed=1),
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop(grace=0)
        await store.close()


async def test_a_watch_of_an_execution_whose_events_are_gone_does_not_hang(
    engine: Engine,
) -> None:
    await engine.create_workflow(load_workflow(APPROVE))
    ex = await engine.start_execution("approve", {})
    await engine.signal(ex.id, "go", {"n": 1})
    final = await engine.wait(ex.id, timeout=30)
    assert final.ended_at is not None
    await engine.start_execution("approve", {})  # the table's newest rows are its events
    deleted = await engine.store.maintain_events(now=final.ended_at + 10, retention_seconds=1)
    assert deleted == final.last_sequence
    assert await engine.list_events(ex.id) == []

    async def watch() -> list[Any]:
        return [event async for event in engine.watch(ex.id)]

    try:
        assert await asyncio.wait_for(watch(), 5) == []
    except AgentrunError:
        pass  # refused (say, FAILED_PRECONDITION: its events are gone): as good as an end
    except TimeoutError:
        pytest.fail("the Watch stream of an ended execution with no events left never ended")
