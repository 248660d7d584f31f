"""A replica restarted under its id takes back every instance it held, however many: the
start's claim of its own instances moves on by id (with `include_own` the rows it just
claimed are its own and match again; a batch-until-short loop claimed the first batch
forever once a replica held a full batch of driven instances)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentrun.engine.machine import leases
from agentrun.engine.machine.leases import CLAIM_BATCH
from agentrun.storage.sql import SqlStore
from tests.machines.conftest import close, make, open_backend
from tests.storage.conftest import PgServer

pytestmark = pytest.mark.timeout(120)

TIMED = """
name: {name}
mode: state_machine
initial: waiting
states:
  waiting:
    after: {{1h: done}}
  done: {{final: true}}
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_restart_takes_back_more_than_a_batch_of_its_own_instances(
    backend: str, tmp_path: Any
) -> None:
    replica = f"r-{uuid.uuid4().hex[:8]}"
    name = f"timed-{uuid.uuid4().hex[:8]}"
    count = CLAIM_BATCH + CLAIM_BATCH // 2
    store = await open_backend(backend, tmp_path)
    first = await make(store, replica=replica)
    await first.define(TIMED.format(name=name))
    ids = {(await first.machines.create_instance(name)).id for _ in range(count)}
    await close(first)
    await store.close()

    store = await open_backend(backend, tmp_path)
    claims = 0
    claim = store.instances.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        assert claims <= 10, "the start's claim does not move on"
        return await claim(*args, **kwargs)

    store.instances.claim = counted
    second = await asyncio.wait_for(make(store, replica=replica), 60)
    try:
        assert ids <= second.machines.leases.held_ids()
    finally:
        await close(second)
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_slow_restart_keeps_the_instances_it_took_first(
    backend: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are renewed while a start is still taking its instances back: one that takes
    longer than a lease keeps its first page (before, renewing began after the last page, so
    the first page's leases lapsed and another replica's claim loop took those instances)."""
    lease = 3.0
    opener: Any
    if backend == "postgresql":
        # A database of its own: the other replica adopts every orphan it finds, and other
        # tests of this worker leave theirs (instances waiting on timers) in the shared one.
        server = PgServer()
        url = server.create_database(migrated=True)

        async def private(kind: str, tmp_path: Any) -> Any:
            store = SqlStore(url)
            await store.open()
            return store

        opener = private
    else:
        opener = open_backend

    monkeypatch.setattr(leases, "CLAIM_BATCH", 2)
    replica = f"r-{uuid.uuid4().hex[:8]}"
    name = f"timed-{uuid.uuid4().hex[:8]}"
    store = await opener(backend, tmp_path)
    first = await make(store, replica=replica, lease_seconds=lease)
    await first.define(TIMED.format(name=name))
    ids = {(await first.machines.create_instance(name)).id for _ in range(4)}
    await close(first)
    await store.close()

    # Taking over the second page's first instance takes longer than a lease.
    paged = asyncio.Event()
    taken = 0
    take_over = leases.LeaseKeeper.take_over

    async def slow(keeper: leases.LeaseKeeper, record: Any) -> None:
        nonlocal taken
        if keeper.owner == replica:
            taken += 1
            if taken == 3:
                paged.set()
                await asyncio.sleep(lease * 1.7)
        await take_over(keeper, record)

    monkeypatch.setattr(leases.LeaseKeeper, "take_over", slow)
    store = await opener(backend, tmp_path)
    restart = asyncio.ensure_future(make(store, replica=replica, lease_seconds=lease))
    others = await opener(backend, tmp_path)
    other = None
    try:
        async with asyncio.timeout(30):
            await paged.wait()
        # Another replica, claiming orphaned instances every 0.2 s.
        other = await make(others, lease_seconds=lease, sweep_interval=0.2)
        second = await asyncio.wait_for(restart, 60)
        try:
            assert ids <= second.machines.leases.held_ids()
            assert not ids & other.machines.leases.held_ids()
        finally:
            await close(second)
    finally:
        if not restart.done():
            restart.cancel()
        if other is not None:
            await close(other)
        await others.close()
        await store.close()
        if backend == "postgresql":
            server.release(url)
