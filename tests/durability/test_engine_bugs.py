"""Minimal reproductions of engine bugs that the durability tests found. Each is marked
xfail(strict=True): when the engine is fixed, the test passes, the mark fails the run, and the
mark should go.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from tests.durability.faults import ProxyStore

ONE_STEP = "name: one\nnodes:\n  - {id: a, tool: {name: core.echo, args: {x: 1}}}\n"


class SlowRenew(ProxyStore):
    """renew_leases reads which leases this replica holds, then its answer is delayed (as a
    round trip to the database is) until the test lets it through."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.renewed = asyncio.Event()
        self.release = asyncio.Event()

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        owned = await self.inner.renew_leases(owner, lease_seconds=lease_seconds, now=now)
        self.renewed.set()
        await self.release.wait()
        return owned


@pytest.mark.xfail(
    strict=True,
    reason="Engine._maintain stops runs missing from a renew_leases answer that was read before "
    "they started: an execution started while a renewal is in flight is cancelled as 'lease lost' "
    "although this replica holds its lease, and then nobody runs it (its lease is renewed forever)",
)
async def test_an_execution_started_during_a_lease_renewal_keeps_running() -> None:
    store = SlowRenew(MemoryStore())
    engine = Engine(
        store, tools=Registry(core_tools()), agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=0.3),
    )
    await engine.start()
    try:
        await engine.create_workflow(load_workflow(ONE_STEP))
        await asyncio.wait_for(store.renewed.wait(), 5)  # a renewal is on its way back
        started = await engine.start_execution("one", {})  # leased to "a", epoch 1
        store.release.set()
        final = await engine.wait(started.id, timeout=3)
        assert final.state is ExecutionState.SUCCEEDED
    finally:
        store.release.set()
        await engine.stop(grace=0)
