"""The replica waiting for a remote call keeps it alive (`keep_callers`, every lease/3) while
it waits, whatever `workers.poll` says: a call whose caller stopped keeping it is cancelled by
the next sweep of any replica, and no worker is given it meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.integrations.workers import WorkersConfig
from agentrun.integrations.workers.bell import Bell
from agentrun.integrations.workers.calls import RemoteCalls
from agentrun.integrations.workers.catalog import RemoteTool
from agentrun.storage.sql import SqlStore
from agentrun.storage.worker_calls import CallState, worker_calls_for
from tests.storage.templates import migrated_sqlite

pytestmark = pytest.mark.timeout(120)


async def test_a_waiting_caller_keeps_its_call_when_poll_is_longer_than_the_lease(
    tmp_path: Path,
) -> None:
    """`workers.poll` longer than `workers.lease` (accepted by the config): the caller's loop
    slept until its next poll, so it kept its calls only then, and for the rest of each poll
    they were the calls of a caller gone: skipped by every claim, and cancelled by another
    replica's sweep although this one still waited. The clock is the test's: the lease
    runs out when the test says, and the loop must renew before another replica sweeps. The
    call comes while the loop is idle (asleep until its next poll), as after any quiet time."""
    store = SqlStore(migrated_sqlite(tmp_path / "store.db"))
    await store.open()
    repo = worker_calls_for(store)
    now = [time.time()]
    config = WorkersConfig(heartbeat=1.0, lease=3.0, poll=3600.0)
    calls = RemoteCalls(repo, Bell(store), config, "a", clock=lambda: now[0])
    tool = RemoteTool("remote.echo", {}, calls)
    # The loop runs already, idle (nothing waited for): it sleeps until its next poll.
    calls.start()
    async with asyncio.timeout(30):
        while calls._since != now[0]:
            await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(calls.call(tool, {}, CallContext("e1", "n", 1, "e1/n")))
    try:
        async with asyncio.timeout(30):
            while not (found := await repo.waiting("e1")):
                await asyncio.sleep(0.02)
        (call,) = found
        expires = call.caller_expires
        # Twice (the loop's first turn, if late, keeps the call once whatever its poll):
        for _ in range(2):
            # The lease the caller gave its call runs out now: it must keep the call again.
            now[0] = expires
            try:
                async with asyncio.timeout(30):
                    while (kept := (await repo.get_calls([call.id]))[0]).caller_expires <= expires:
                        await asyncio.sleep(0.05)
            except TimeoutError:
                pytest.fail("the waiting caller did not keep its call once its lease ran out")
            # Another replica sweeps just after that lease: the call is still wanted.
            assert await repo.sweep(now=expires + 0.1, keep_seconds=600, worker_seen_after=0) == []
            assert kept.state is CallState.READY
            expires = kept.caller_expires
        assert not waiting.done()
    finally:
        waiting.cancel()
        with pytest.raises((asyncio.CancelledError, ToolFailure)):
            await waiting
        await calls.stop()
        await repo.close()
        await store.close()
