"""A replica restarted under its id takes back every instance it held, even one whose row
another transaction locked while the start claimed (machine/leases.py `LeaseKeeper.start`): on
PostgreSQL the start's pages select their rows FOR UPDATE SKIP LOCKED and move on by id, so an
own instance locked at that moment (a peer inserting a row that references it takes FOR KEY
SHARE on it through the foreign key) was skipped, and nothing claimed it afterwards: the claim
loop never claims this replica's own instances, and the renewals kept its lease. Its timer
never fired until the next restart."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from agentrun.engine.machine import leases
from agentrun.storage.machines import InstanceState
from agentrun.storage.sql import SqlStore
from tests.machines.conftest import close, make, until
from tests.machines.test_leases import TIMED
from tests.storage.conftest import PgServer

pytestmark = pytest.mark.timeout(180)


async def test_a_restart_takes_back_an_own_instance_locked_while_it_claimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lease = 3.0
    # Pages of 2: the locked instance is in the first, and the pages move on past it.
    monkeypatch.setattr(leases, "CLAIM_BATCH", 2)
    # A database of its own: no other test's instances to claim.
    server = PgServer()
    url = server.create_database(migrated=True)
    replica = f"r-{uuid.uuid4().hex[:8]}"
    name = f"timed-{uuid.uuid4().hex[:8]}"
    store = SqlStore(url)
    await store.open()
    locker: asyncpg.Connection | None = None
    second: Any = None
    try:
        first = await make(store, replica=replica, lease_seconds=lease)
        # Short enough to fire in the test (its action records "fired"), long enough that the
        # first replica is closed well before (a loaded machine).
        await first.define(TIMED.format(name=name, delay="5s", tool="test.record"))
        ids = sorted([(await first.machines.create_instance(name)).id for _ in range(4)])
        await close(first)
        await store.close()
        locked = ids[0]

        store = SqlStore(url)
        await store.open()
        # Another transaction holds the row, as a peer's uncommitted insert referencing it does.
        locker = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        held = locker.transaction()
        await held.start()
        await locker.execute("SELECT 1 FROM sm_instances WHERE id = $1 FOR KEY SHARE", locked)
        second = await asyncio.wait_for(make(store, replica=replica, lease_seconds=lease), 60)
        # The start's pages skipped it (and took the others).
        assert locked not in second.machines.leases.held_ids()
        assert set(ids[1:]) <= second.machines.leases.held_ids()
        await held.rollback()  # the lock is gone once the start is over

        async def fired() -> bool:
            states = [await second.machines.get_instance(i) for i in ids]
            return all(s.state is InstanceState.COMPLETED for s in states)

        # Several leases: a skipped instance is never taken back, however long one waits.
        try:
            await until(lambda: locked in second.machines.leases.held_ids(), lease * 8)
            await until(fired, lease * 8)
        except TimeoutError:
            record = await store.instances.get_instance(locked)
            assert record is not None
            pytest.fail(
                f"the locked instance was never taken back: {record.state.value},"
                f" at {record.current}, owner {record.owner}, epoch {record.lease_epoch},"
                f" held here: {locked in second.machines.leases.held_ids()}"
            )
        for i in ids:
            final = await second.machines.get_instance(i)
            assert final.current == "done", i
            # Claimed once, by the restart (the creation's epoch was 1).
            assert (final.owner, final.lease_epoch) == (replica, 2), i
        assert second.recorder.calls == ["fired"] * len(ids)
    finally:
        if locker is not None:
            await locker.close()
        if second is not None:
            await close(second)
        await store.close()
        server.release(url)
