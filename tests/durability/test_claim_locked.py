"""A restart takes back every execution it held, even one whose row another transaction locked
while the start claimed (engine/upkeep.py `claim_at_start`): on PostgreSQL the start's pages
select their rows FOR UPDATE SKIP LOCKED and move on by id, so an own execution locked at that
moment (a peer inserting a signal for it takes FOR KEY SHARE on its row through the foreign
key) was skipped, and nothing claimed it afterwards: the claim loop never claims this
replica's own rows. It stayed this replica's, kept alive by its `replica_leases` row, and was
never resumed until the next restart."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from agentrun.storage.records import ExecutionState
from agentrun.storage.sql import SqlStore
from tests.durability.test_claim_pages import engine_on, killed_mid_steps
from tests.durability.test_engine_bugs import napping
from tests.storage.conftest import PgServer

pytestmark = pytest.mark.timeout(180)


async def test_a_restart_resumes_an_own_execution_locked_while_it_claimed() -> None:
    # Long enough that the restart's first renewal finds the killed replica's row alive: one
    # after it lapsed locks every row the replica owns (FOR UPDATE), the held one too.
    lease = 6.0
    # A database of its own: no other test's executions to claim or adopt.
    server = PgServer()
    url = server.create_database(migrated=True)
    killed = SqlStore(url)
    await killed.open()
    store = SqlStore(url)
    locker: asyncpg.Connection | None = None
    second = None
    try:
        ids = await killed_mid_steps(killed, 3, lease=lease)
        locked = ids[1]
        await store.open()
        # Another transaction holds the row, as a peer's uncommitted signal insert does.
        locker = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        held = locker.transaction()
        await held.start()
        await locker.execute("SELECT 1 FROM executions WHERE id = $1 FOR KEY SHARE", locked)

        second = engine_on(store, napping(), lease)
        await asyncio.wait_for(second.start(), 60)
        # The start's pages skipped it (and took the others).
        assert locked not in second.runs
        await held.rollback()  # the lock is gone once the start is over

        for execution_id in ids:
            # Several leases: a missed execution is never resumed, however long one waits.
            try:
                final = await second.wait(execution_id, timeout=lease * 8)
            except TimeoutError:
                record = await store.get_execution(execution_id)
                assert record is not None
                pytest.fail(
                    f"{'the locked' if execution_id == locked else 'an'} execution was never"
                    f" resumed: {record.state.value}, owner {record.owner},"
                    f" epoch {record.lease_epoch}, running here: {execution_id in second.runs}"
                )
            assert final.state is ExecutionState.SUCCEEDED, execution_id
            assert (final.owner, final.lease_epoch) == ("a", 2)  # claimed once, by the restart
    finally:
        if locker is not None:
            await locker.close()
        if second is not None:
            await second.stop(grace=0)
        await store.close()
        await killed.close()
        server.release(url)
