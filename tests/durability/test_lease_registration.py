"""A replica registers its lease row at start (issue 18, signal p99): its first renewal used to
come a lease/3 after start and rewrite the lease of every execution it had started meanwhile
(262 ms holding the SQLite writer with 30,000 waiting executions, and every commit behind it)."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.sql import SqlStore
from tests.durability.faults import ProxyStore

WAITING = "name: waiting\nnodes:\n  - {id: w, wait: {signal: go}}\n"


class Renewals(ProxyStore):
    """Keeps every renew_leases answer: a set is a renewal that rewrote each lease it held."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.answers: list[set[str] | None] = []
        self.renewed = asyncio.Event()

    async def renew_leases(
        self, owner: str, *, lease_seconds: float, now: float
    ) -> set[str] | None:
        owned = await self.inner.renew_leases(owner, lease_seconds=lease_seconds, now=now)
        self.answers.append(owned)
        self.renewed.set()
        return owned


async def test_a_replica_registers_its_lease_at_start(tmp_path: Any) -> None:
    inner = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/leases.db")
    await inner.open()
    store = Renewals(inner)
    # lease/3 is 100 s: within this test, only a renewal made at start can happen.
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=300),
    )
    await engine.start()
    try:
        await asyncio.wait_for(store.renewed.wait(), 60)
        assert store.answers == [set()]  # it held nothing yet: its row, and no execution's
        await engine.create_workflow(load_workflow(WAITING))
        started = [await engine.start_execution("waiting", {}) for _ in range(20)]
        # The next renewal extends the replica's row alone: None says it held throughout and
        # no execution's lease was rewritten.
        again = await inner.renew_leases("a", lease_seconds=300, now=engine.clock())
        assert again is None
        held = await inner.get_execution(started[0].id)
        assert held is not None and held.owner == "a"
    finally:
        await engine.stop()
        await inner.close()
