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


def engine_on(store: Any, tools: Registry, lease: float = 5, replica: str = "a") -> Engine:
    return Engine(
        store,
        tools=tools,
        agents=default_agents(),
        config=EngineConfig(replica_id=replica, lease_seconds=lease),
    )


async def killed_mid_steps(shared: Any, count: int, *, lease: float) -> list[str]:
    """`count` executions of NAP started on replica "a", left as kill -9 leaves them: their
    steps RUNNING, the executions leased to "a"; their ids in order."""
    started: list[str] = []
    first = engine_on(shared, napping(started, asyncio.Event()), lease)
    await first.start()
    await first.create_workflow(load_workflow(NAP))
    ids = sorted([(await first.start_execution("nap", {})).id for _ in range(count)])
    async with asyncio.timeout(10):
        while len(started) < count:
            await asyncio.sleep(0.01)
    first.draining = True
    first._maintenance.cancel()
    for run in list(first._runs.values()):
        run.task.cancel()
    await asyncio.sleep(0.05)
    return ids


async def test_a_restart_claims_its_executions_page_by_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = MemoryStore()
    ids = await killed_mid_steps(shared, 5, lease=5)

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


class SlowPages(ProxyStore):
    """Resuming the second page a start claims takes `hold` seconds (a restart resuming
    hundreds of executions on a slow machine): `paged` is set when it begins."""

    def __init__(self, inner: Any, hold: float) -> None:
        super().__init__(inner)
        self.hold = hold
        self.paged = asyncio.Event()
        self.pages = 0

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "claim_executions" and kwargs.get("include_own"):
            self.pages += 1
        elif name == "get_nodes" and self.pages == 2 and not self.paged.is_set():
            self.paged.set()
            await asyncio.sleep(self.hold)
        return await super()._call(name, *args, **kwargs)


async def test_a_slow_restart_keeps_the_leases_it_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases are renewed while the start is still claiming: a restart whose claim outlasts
    a lease kept what it had claimed (before, the renewals began after the last page, so the
    first page's leases lapsed and another replica took those executions from under their
    runs, which then stopped as "lease lost")."""
    lease = 3.0
    shared = MemoryStore()
    ids = await killed_mid_steps(shared, 4, lease=lease)

    monkeypatch.setattr(upkeep, "CLAIM_FIRST_PAGE", 2)
    monkeypatch.setattr(upkeep, "CLAIM_PAGE", 2)
    release = asyncio.Event()
    store = SlowPages(shared, hold=lease * 1.7)
    second = engine_on(store, napping(release=release), lease)
    restart = asyncio.ensure_future(second.start())
    third: Engine | None = None
    try:
        async with asyncio.timeout(10):
            await store.paged.wait()
        # Another replica, claiming orphans as soon as their leases expire.
        third = engine_on(shared, napping(release=release), lease, replica="c")
        await third.start()
        await restart
        assert not any(i in third.runs for i in ids)
        release.set()
        for execution_id in ids:
            final = await second.wait(execution_id, timeout=10)
            assert final.state is ExecutionState.SUCCEEDED
            assert (final.owner, final.lease_epoch) == ("a", 2)  # claimed once, by the restart
    finally:
        release.set()
        await asyncio.gather(restart, return_exceptions=True)
        await second.stop(grace=0)
        if third is not None:
            await third.stop(grace=0)
