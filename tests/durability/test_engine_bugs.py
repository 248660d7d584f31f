"""Minimal reproductions of the engine and store bugs that the durability tests found, kept as
regression tests (all five were fixed in 53fb04a). Each builds the exact interleaving
deterministically, where the acceptance tests met it only by chance.
"""

from __future__ import annotations

import asyncio
import contextlib
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


# The bug: Engine._maintain stops runs missing from a renew_leases answer that was read before
# they started: an execution started while a renewal is in flight is cancelled as 'lease lost'
# although this replica holds its lease, and then nobody runs it (its lease is renewed forever)
async def test_an_execution_started_during_a_lease_renewal_keeps_running() -> None:
    store = SlowRenew(MemoryStore())
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
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


class CreateThenFail(ProxyStore):
    """The first create_execution is written, then the caller sees the connection drop."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.failed = False

    async def create_execution(self, record: Any, nodes: Any = (), events: Any = ()) -> Any:
        result = await self.inner.create_execution(record, nodes, events)
        if not self.failed:
            self.failed = True
            from agentrun.storage.base import StoreError

            raise StoreError("connection lost after COMMIT")
        return result


# The bug: Engine.start_execution: when create_execution raised StoreError after the row was
# written, the client's retry with the same request_id returns the stored PENDING execution
# without launching it; it stays leased to this replica (renewed forever) and never runs
async def test_a_start_retried_after_an_ambiguous_store_error_runs() -> None:
    from agentrun.storage.base import StoreError

    store = CreateThenFail(MemoryStore())
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=0.3),
    )
    await engine.start()
    try:
        await engine.create_workflow(load_workflow(ONE_STEP))
        with pytest.raises(StoreError):
            await engine.start_execution("one", {}, request_id="r1")
        retried = await engine.start_execution("one", {}, request_id="r1")  # what a client does
        final = await engine.wait(retried.id, timeout=3)
        assert final.state is ExecutionState.SUCCEEDED
    finally:
        await engine.stop(grace=0)


def napping(started: list[str] | None = None, release: asyncio.Event | None = None) -> Registry:
    """Tools whose `test.nap` runs until `release` is set (ends at once without one). The
    engine that crashed_mid_step kills holds its step, so the step is RUNNING when the run
    dies however slow the machine (a `core.sleep` of 0.5 s could end first, or not have
    started 0.1 s after the start); an engine given no `release` finishes its attempt at once."""
    tools = Registry(core_tools())

    @tools.tool("test.nap")
    async def nap(args: Any, ctx: Any) -> dict[str, Any]:
        if started is not None:
            started.append(ctx.execution_id)
        if release is not None:
            await release.wait()
        return {}

    return tools


async def crashed_mid_step(store: Any, *, retries: int, lease_seconds: float = 0.3) -> Any:
    """Starts a one-step execution on replica "a" and leaves it as a kill -9 would: the run
    gone, the step RUNNING in the store, the execution RUNNING and leased to "a" (for
    `lease_seconds` from a's last renewal)."""
    sleepy = (
        "name: nap\nnodes:\n  - {id: a, retry: {max_attempts: "
        + str(retries)
        + ", initial_interval: 1ms},"
        " tool: {name: test.nap, args: {}}}\n"
    )
    steps: list[str] = []
    first = Engine(
        store,
        tools=napping(steps, asyncio.Event()),  # never set: the step runs until the "kill"
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=lease_seconds),
    )
    await first.start()
    await first.create_workflow(load_workflow(sleepy))
    started = await first.start_execution("nap", {})
    async with asyncio.timeout(10):
        while not steps:  # the step is RUNNING
            await asyncio.sleep(0.01)
    first.draining = True
    first._maintenance.cancel()
    runs = [run.task for run in first._runs.values()]
    for task in runs:
        task.cancel()
    if runs:
        await asyncio.wait(runs, timeout=10)
    return started


class FailOnce(ProxyStore):
    """`method` fails once with StoreError (before doing anything)."""

    def __init__(self, inner: Any, method: str) -> None:
        super().__init__(inner)
        self.method = method
        self.failed = False

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == self.method and not self.failed:
            self.failed = True
            from agentrun.storage.base import StoreError

            raise StoreError(f"connection lost before {name}")
        return await super()._call(name, *args, **kwargs)


# The bug: Engine._resume_all: a store failure while resuming a claimed execution (here get_nodes
# at start) is logged ('could not resume') and never retried; the execution stays leased to this
# replica, renewed forever, and never runs
async def test_a_claimed_execution_whose_resume_failed_is_resumed_later() -> None:
    shared = MemoryStore()
    started = await crashed_mid_step(shared, retries=3)

    second = Engine(
        FailOnce(shared, "get_nodes"),
        tools=napping(),
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=0.3),
    )
    await second.start()  # claims its own execution back; reading its nodes fails once
    try:
        final = await second.wait(started.id, timeout=10)
        assert final.state is ExecutionState.SUCCEEDED
    finally:
        await second.stop(grace=0)


# The bug: Run.restore: when a step caught mid-flight has no attempts left, _attempt_failed fails
# the execution (execution.failed is committed), but the end of restore() then sets record.state
# back to RUNNING; the store keeps the execution RUNNING forever and Engine.wait returns a non-
# terminal record
async def test_an_interrupted_step_without_retries_fails_the_execution_for_good() -> None:
    shared = MemoryStore()
    started = await crashed_mid_step(shared, retries=1)
    second = Engine(
        shared,
        tools=napping(),
        agents=default_agents(),
        config=EngineConfig(replica_id="a", lease_seconds=0.3),
    )
    await second.start()
    try:
        final = await second.wait(started.id, timeout=10)
        events = [e.type for e in await shared.list_events(started.id)]
        assert events[-1] == "execution.failed"
        assert final.state is ExecutionState.FAILED
        assert (await shared.get_execution(started.id)).state is ExecutionState.FAILED
    finally:
        await second.stop(grace=0)


# The bug: SqlStore (PostgreSQL) sets no idle_in_transaction_session_timeout: a replica frozen
# (SIGSTOP, GC or VM pause) inside one of its transactions keeps the row locks of its executions
# (renew_leases locks every row it holds), and claim_executions' FOR UPDATE SKIP LOCKED skips
# those rows for as long as the process is frozen: its work is never taken over
@pytest.mark.timeout(60)
async def test_a_replica_frozen_inside_a_transaction_does_not_block_take_over(pg_url: str) -> None:
    import time

    import sqlalchemy as sa

    from agentrun.storage.records import ExecutionRecord
    from agentrun.storage.sql import SqlStore

    frozen, other = SqlStore(pg_url), SqlStore(pg_url)
    await frozen.open()
    await other.open()
    try:
        now = time.time()
        record = ExecutionRecord(
            id="x1",
            tenant="default",
            workflow="w",
            version=1,
            state=ExecutionState.RUNNING,
            input={},
            created_at=now,
        )
        await frozen.create_execution(record)
        assert await frozen.claim_executions("frozen", lease_seconds=0.5, now=now)
        # The frozen replica is inside renew_leases' transaction when it stops: the UPDATE ran,
        # the COMMIT never comes.
        held = contextlib.AsyncExitStack()
        conn = await held.enter_async_context(frozen.database.connect())
        await conn.begin()
        await conn.execute(
            sa.text(
                "UPDATE executions SET lease_expires_at = lease_expires_at WHERE owner = 'frozen'"
            )
        )
        deadline = time.time() + 8  # lease 0.5 s: a few seconds more is plenty
        claimed: list[Any] = []
        while not claimed and time.time() < deadline:
            await asyncio.sleep(0.25)
            claimed = await other.claim_executions("other", lease_seconds=5, now=time.time())
        with contextlib.suppress(Exception):
            await held.aclose()
        assert [r.id for r in claimed] == ["x1"], (
            "the frozen replica's execution was never taken over"
        )
    finally:
        await frozen.close()
        await other.close()


# The bug (issue 13, item 9): a replica restarted on a busy machine opened its store inside a
# transaction that stayed open while alembic loaded its scripts, even when the schema was
# current, and PostgreSQL ended its sessions as idle in transaction (5 s, whatever the lease):
# the store now reads the schema version first, and bounds idle transactions by the lease
@pytest.mark.timeout(60)
async def test_a_restart_on_a_current_schema_runs_no_migration(pg_url: str, monkeypatch) -> None:
    import sqlalchemy as sa

    from agentrun.storage import sql, sqldb

    def refuse(_conn: Any) -> None:
        raise AssertionError("a migration transaction was opened on a current schema")

    monkeypatch.setattr(sqldb, "_migrate", refuse)
    store = sql.SqlStore(pg_url, lease_seconds=15)  # pg_url is migrated already
    await store.open()
    try:
        rows = await store.database.read(sa.text("SHOW idle_in_transaction_session_timeout"))
        assert rows[0][0] == "15s"
    finally:
        await store.close()


# The bug (issue 13, item 9): renewals and claims ran in one loop, one after the other, every
# lease/3: a replica busy resuming a batch of adopted executions renewed late and lost its own
# leases, and claims happened only at that fixed beat (take-over up to lease + lease/3 + the
# time of the loop). The claim loop now wakes when the first lease held elsewhere expires
async def test_the_next_expiry_of_a_lease_held_elsewhere(pg_url: str) -> None:
    import time

    from agentrun.storage.records import ExecutionRecord
    from agentrun.storage.sql import SqlStore

    for store in (MemoryStore(), SqlStore(pg_url)):
        await store.open()
        try:
            now = time.time()
            assert await store.next_lease_expiry("a") is None
            for i, owner in enumerate(["a", "b", "b"]):
                record = ExecutionRecord(
                    id=f"x{i}",
                    tenant="default",
                    workflow="w",
                    version=1,
                    state=ExecutionState.RUNNING,
                    input={},
                    created_at=now,
                )
                await store.create_execution(record)
                await store.claim_executions(owner, lease_seconds=10 + i, now=now, limit=1)
            assert await store.next_lease_expiry("a") == pytest.approx(now + 11)
            assert await store.next_lease_expiry("b") == pytest.approx(now + 10)
            assert await store.next_lease_expiry("c") == pytest.approx(now + 10)
            # Not by expiry, its own: a late renewal must not bump the epoch under its runs.
            claimed = await store.claim_executions("a", lease_seconds=1, now=now + 100)
            assert [r.id for r in claimed] == ["x1", "x2"]
            assert (await store.get_execution("x0")).lease_epoch == 1
        finally:
            await store.close()


class SlowResume(ProxyStore):
    """Counts renewals; reading an execution's nodes (which resuming an adopted execution
    does) hangs until the test lets it through, as a slow batch of resumptions would."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.renewals = 0
        self.resuming = asyncio.Event()
        self.release = asyncio.Event()

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        self.renewals += 1
        return await self.inner.renew_leases(owner, lease_seconds=lease_seconds, now=now)

    async def get_nodes(self, execution_id: str) -> Any:
        self.resuming.set()
        await self.release.wait()
        return await self.inner.get_nodes(execution_id)


# The bug (issue 13, item 9): Engine._maintain renewed this replica's leases and then resumed
# the orphans it had claimed, in one loop: while a long batch of resumptions ran, nothing was
# renewed, the replica's own leases expired and a peer took them ("lease lost" for all at once)
async def test_renewals_go_on_while_adopted_executions_are_resumed() -> None:
    inner = MemoryStore()
    # Leased to "a", which is gone; the lease outlives b's start however slow the machine
    # (an expired one is claimed and resumed inside start(), before any renewal: the resume
    # held there, the test never got past start()).
    await crashed_mid_step(inner, retries=3, lease_seconds=60)
    store = SlowResume(inner)
    b = Engine(
        store,
        tools=napping(),
        agents=default_agents(),
        config=EngineConfig(replica_id="b", lease_seconds=0.3),
    )
    await b.start()
    await inner.release_leases("a")  # a's lease runs out now: b's upkeep adopts the execution
    try:
        await asyncio.wait_for(store.resuming.wait(), 10)  # b adopted a's execution
        before = store.renewals
        deadline = asyncio.get_running_loop().time() + 10
        while store.renewals < before + 3:  # three more renewal periods, resumption still hung
            assert asyncio.get_running_loop().time() < deadline, "no renewal while resuming"
            await asyncio.sleep(0.02)
        assert not store.release.is_set()
    finally:
        store.release.set()
        await b.stop(grace=0)
