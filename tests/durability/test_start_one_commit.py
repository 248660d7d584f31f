"""StartExecution stores an execution and its first turn in one commit (issue 18): what a
start writes, counted on a store wrapper, on the memory store and on SQLite's group commit;
a start that fails, is cancelled or is repeated leaves no half-created execution."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.scheduler import SchedulerConfig
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.integrations.registry import FunctionTool
from agentrun.storage.base import Store, StoreError
from agentrun.storage.factory import open_store
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState
from tests.durability.faults import WRITES, ProxyStore

GATED = "name: gated\nnodes:\n  - {id: a, tool: {name: test.gate}}\n  - {id: b, needs: [a], pass: {value: 2}}\n"
INLINE = "name: inline\nnodes:\n  - {id: a, pass: {value: 1}}\n  - {id: b, needs: [a], pass: {value: 2}}\n"


class Counting(ProxyStore):
    """Records every write; `fail_create` makes the next create raise before (`before`) or
    after its commit; `fail_commits`, that many next commits before anything is written."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.writes: list[str] = []
        self.fail_create: str | None = None
        self.fail_commits = 0

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in WRITES:
            self.writes.append(name)
        if name == "commit" and self.fail_commits:
            self.fail_commits -= 1
            raise StoreError("connection lost before COMMIT")
        if name == "create_execution" and self.fail_create is not None:
            when, self.fail_create = self.fail_create, None
            if when == "before":
                raise StoreError("connection lost before COMMIT")
            await super()._call(name, *args, **kwargs)
            raise StoreError("connection lost after COMMIT")
        return await super()._call(name, *args, **kwargs)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Counting]:
    inner = (
        MemoryStore()
        if request.param == "memory"
        else await open_store(f"sqlite:///{tmp_path / 'agentrun.db'}")
    )
    yield Counting(inner)
    await inner.close()


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


async def _engine(store: Store, gate: asyncio.Event, **limits: Any) -> Engine:
    async def wait_for_gate(args: Any, ctx: Any) -> Any:
        await gate.wait()
        return {"ok": True}

    registry = Registry([*core_tools(), FunctionTool(wait_for_gate, name="test.gate")])
    config = (
        EngineConfig(replica_id="a", scheduler=SchedulerConfig(**limits))
        if limits
        else EngineConfig(replica_id="a")
    )
    engine = Engine(store, tools=registry, agents=default_agents(), config=config)
    await engine.start()
    for text in (GATED, INLINE):
        await engine.create_workflow(load_workflow(text))
    return engine


async def test_a_start_writes_the_execution_and_its_first_turn_in_one_commit(
    store: Counting, gate: asyncio.Event
) -> None:
    engine = await _engine(store, gate)
    try:
        store.writes.clear()
        started = await engine.start_execution("gated", {}, request_id="r1")
        assert store.writes == ["create_execution"]
        assert started.state is ExecutionState.RUNNING
        stored = await store.get_execution(started.id)
        assert stored is not None and stored.state is ExecutionState.RUNNING
        events = await store.list_events(started.id, limit=100)
        assert [(e.sequence, e.type, e.node_id) for e in events] == [
            (1, "execution.pending", None),
            (2, "execution.running", None),
            *[(e.sequence, e.type, "a") for e in events[2:]],
        ]
        assert events[-1].type == "node.running"
        assert stored.last_sequence == events[-1].sequence
        nodes = {n.node_id: n for n in await store.get_nodes(started.id)}
        assert nodes["a"].state is NodeState.RUNNING and nodes["a"].attempt == 1
        gate.set()
        final = await engine.wait(started.id, timeout=5)
        assert final.state is ExecutionState.SUCCEEDED and final.output is not None
        # A repeated start writes nothing and runs nothing again.
        writes = len(store.writes)
        again = await engine.start_execution("gated", {}, request_id="r1")
        assert again.id == started.id and store.writes[writes:] == ["create_execution"]
    finally:
        await engine.stop(grace=0)


async def test_a_workflow_its_first_turn_finishes_is_stored_ended_by_the_start(
    store: Counting, gate: asyncio.Event
) -> None:
    engine = await _engine(store, gate)
    try:
        store.writes.clear()
        started = await engine.start_execution("inline", {})
        assert started.state is ExecutionState.SUCCEEDED and started.output is not None
        await asyncio.sleep(0.05)  # the launched run has nothing left to write
        assert store.writes == ["create_execution"]
        final = await engine.wait(started.id, timeout=5)
        assert final.state is ExecutionState.SUCCEEDED
        assert (await store.get_execution(started.id)).state is ExecutionState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        await engine.stop(grace=0)


async def test_a_start_refused_before_its_commit_leaves_nothing(
    store: Counting, gate: asyncio.Event
) -> None:
    engine = await _engine(store, gate)
    try:
        store.fail_create = "before"
        with pytest.raises(StoreError):
            await engine.start_execution("gated", {}, request_id="r1")
        assert await store.list_executions("default", limit=10) == []
        assert engine.runs.live == {}
        gate.set()
        retried = await engine.start_execution("gated", {}, request_id="r1")
        final = await engine.wait(retried.id, timeout=5)
        assert final.state is ExecutionState.SUCCEEDED
    finally:
        await engine.stop(grace=0)


async def test_a_start_that_failed_after_its_commit_runs_once(
    store: Counting, gate: asyncio.Event
) -> None:
    """The caller sees the error, but the execution is stored running: it runs here at once
    (its first attempt is not lost to a restart), and the retried start finds it."""
    engine = await _engine(store, gate)
    try:
        store.fail_create = "after"
        with pytest.raises(StoreError):
            await engine.start_execution("gated", {}, request_id="r1")
        [stored] = await store.list_executions("default", limit=10)
        assert stored.id in engine.runs
        retried = await engine.start_execution("gated", {}, request_id="r1")
        assert retried.id == stored.id
        gate.set()
        final = await engine.wait(retried.id, timeout=5)
        assert final.state is ExecutionState.SUCCEEDED
        node = {n.node_id: n for n in await store.get_nodes(stored.id)}["a"]
        assert node.attempt == 1  # not interrupted and tried again
    finally:
        await engine.stop(grace=0)


async def test_a_start_cancelled_while_it_commits_still_runs(
    store: Counting, gate: asyncio.Event
) -> None:
    engine = await _engine(store, gate)
    try:
        gate.set()
        task = asyncio.create_task(engine.start_execution("gated", {}, request_id="r1"))
        while "create_execution" not in store.writes[-1:]:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            executions = await store.list_executions("default", limit=10)
            if executions and executions[0].state.terminal:
                break
            await asyncio.sleep(0.025)
        assert [e.state for e in executions] == [ExecutionState.SUCCEEDED]
    finally:
        await engine.stop(grace=0)


async def test_a_start_under_a_quota_waits_pending_and_starts_when_a_place_frees(
    store: Counting, gate: asyncio.Event
) -> None:
    engine = await _engine(store, gate, max_running_executions_per_tenant=1)
    try:
        first = await engine.start_execution("gated", {})
        second = await engine.start_execution("gated", {})
        assert second.state is ExecutionState.PENDING
        gate.set()
        for started in (first, second):
            final = await engine.wait(started.id, timeout=5)
            assert final.state is ExecutionState.SUCCEEDED
    finally:
        await engine.stop(grace=0)


def _count_tasks(created: list[str]) -> None:
    """From now on, the name of each task's coroutine goes into `created`."""

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        created.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop, **kwargs)

    asyncio.get_running_loop().set_task_factory(counting)


async def test_a_start_on_sql_queues_its_create_without_a_task(
    tmp_path: Path, gate: asyncio.Event
) -> None:
    """On a SQL store the start awaits the group commit's own future (`create_execution_soon`):
    no task per start runs the creation; one cancelled while it commits still runs."""
    store = await open_store(f"sqlite:///{tmp_path / 'agentrun.db'}")
    engine = await _engine(store, gate)
    created: list[str] = []
    try:
        _count_tasks(created)
        gate.set()
        started = await engine.start_execution("inline", {}, request_id="r1")
        assert started.state is ExecutionState.SUCCEEDED
        assert not [name for name in created if "create_execution" in name]
        # Cancelled while its commit is under way: stored, and run all the same (its tool is
        # called once the run is launched, after the commit).
        task = asyncio.create_task(engine.start_execution("gated", {}, request_id="r2"))
        while not store.executions.writer._pending:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            executions = await store.list_executions("default", limit=10)
            if len(executions) == 2 and all(e.state.terminal for e in executions):
                break
            await asyncio.sleep(0.025)
        assert [e.state for e in executions] == [ExecutionState.SUCCEEDED] * 2
    finally:
        asyncio.get_running_loop().set_task_factory(None)
        await engine.stop(grace=0)
        await store.close()


async def test_an_ended_run_gives_its_place_back_without_a_task(
    store: Counting, gate: asyncio.Event
) -> None:
    """Without a quota or a key, an ended execution frees nothing in the store: its run gives
    the place back at once (`finished_now`), no task per execution; under a quota the waiting
    execution still starts when the place frees (the test above)."""
    engine = await _engine(store, gate)
    created: list[str] = []
    try:
        _count_tasks(created)
        started = await engine.start_execution("inline", {}, request_id="r1")
        final = await engine.wait(started.id, timeout=5)
        assert final.state is ExecutionState.SUCCEEDED
        await asyncio.sleep(0)
        assert not [name for name in created if "_admission_freed" in name]
    finally:
        asyncio.get_running_loop().set_task_factory(None)
        await engine.stop(grace=0)
