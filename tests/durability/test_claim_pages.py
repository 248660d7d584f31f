"""A restart claims its executions in pages, each resumed before the next is read
(engine/upkeep.py `claim_at_start`): the first steps run again while the rest are claimed,
instead of after every row was claimed and read (issue 18's recovery row)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow, upkeep
from agentrun.integrations import Registry, default_agents
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from tests.durability.faults import ProxyStore
from tests.durability.test_engine_bugs import napping

NAP = (
    "name: nap\nnodes:\n  - {id: a, retry: {max_attempts: 3, initial_interval: 1ms},"
    " tool: {name: test.nap, args: {}}}\n"
)


class Claims(ProxyStore):
    """Records each claim: its limit, its `after_id`, and which executions ran here then."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.engine: Engine | None = None
        self.claims: list[tuple[int, str | None, set[str]]] = []

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "claim_executions":
            assert self.engine is not None
            running = {i for i in self.ids if i in self.engine.runs}
            self.claims.append((kwargs["limit"], kwargs.get("after_id"), running))
        return await super()._call(name, *args, **kwargs)

    ids: list[str] = []


def engine_on(store: Any, tools: Registry) -> Engine:
    return Engine(
        store,
        tools=tools,
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=5),
    )


async def test_a_restart_claims_its_executions_page_by_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = MemoryStore()
    started: list[str] = []
    first = engine_on(shared, napping(started, asyncio.Event()))
    await first.start()
    await first.create_workflow(load_workflow(NAP))
    ids = sorted([(await first.start_execution("nap", {})).id for _ in range(5)])
    async with asyncio.timeout(10):
        while len(started) < 5:
            await asyncio.sleep(0.01)
    # Left as kill -9 leaves it: steps RUNNING, executions leased to "a".
    first.draining = True
    first._maintenance.cancel()
    for run in list(first._runs.values()):
        run.task.cancel()
    await asyncio.sleep(0.05)

    monkeypatch.setattr(upkeep, "CLAIM_FIRST_PAGE", 2)
    monkeypatch.setattr(upkeep, "CLAIM_PAGE", 2)
    store = Claims(shared)
    store.ids = ids
    release = asyncio.Event()
    second = engine_on(store, napping(release=release))
    store.engine = second
    await second.start()
    try:
        start_claims = store.claims[:4]
        # Pages of two by id (5 executions: 2, 2, 1; a short page ends the claim).
        assert [(limit, after) for limit, after, _ in start_claims[:3]] == [
            (2, None),
            (2, ids[1]),
            (2, ids[3]),
        ]
        # Each page's runs were started before the next page was claimed.
        assert [running for _, _, running in start_claims[:3]] == [
            set(),
            set(ids[:2]),
            set(ids[:4]),
        ]
        release.set()
        for execution_id in ids:
            final = await second.wait(execution_id, timeout=5)
            assert final.state is ExecutionState.SUCCEEDED
            assert final.lease_epoch == 2  # claimed once at the restart
    finally:
        await second.stop(grace=0)
