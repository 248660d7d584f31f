"""Starts read workflows through a short-lived cache (engine/workflows.py): a burst of starts
that all miss it reads the store once, and what the read ends with reaches each of them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import WorkflowNotFound, load_workflow
from agentrun.engine.workflows import LRU, PLAN_NODES_KEPT, RECORDS_KEPT, WORKFLOW_CACHE_SECONDS
from tests.engine.conftest import Harness


def _slow_reads(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Counts the store's workflow reads; each takes a while, so concurrent misses overlap."""
    store = harness.engine.store
    reads: list[tuple[Any, ...]] = []
    get = store.get_workflow

    async def slow_get(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        await asyncio.sleep(0.05)
        return await get(*args, **kwargs)

    monkeypatch.setattr(store, "get_workflow", slow_get)
    return reads


async def test_a_burst_of_starts_reads_the_workflow_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.engine.create_workflow(
        load_workflow("name: once\nnodes:\n  - {id: a, pass: {value: 1}}\n")
    )
    reads = _slow_reads(harness, monkeypatch)
    started = await asyncio.gather(
        *(harness.engine.start_execution("once", {"n": i}) for i in range(50))
    )
    assert len({e.id for e in started}) == 50
    assert len(reads) == 1
    finals = [await harness.engine.wait(e.id, timeout=30) for e in started]
    assert {f.state.value for f in finals} == {"SUCCEEDED"}


async def test_a_missing_workflow_is_not_found_for_each_start_of_a_burst(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _slow_reads(harness, monkeypatch)
    outcomes = await asyncio.gather(
        *(harness.engine.start_execution("nope", {}) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(o, WorkflowNotFound) for o in outcomes), outcomes
    assert len(reads) == 1
    # A failed read is not cached: the next start reads again.
    with pytest.raises(WorkflowNotFound):
        await harness.engine.start_execution("nope", {})
    assert len(reads) == 2


async def test_a_version_this_process_did_not_compile_compiles_once_off_the_loop(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a restart, or for a version another replica created: its first starts compile
    it once, in a thread (a 10,000-node workflow compiles in ~150 ms; the loop keeps serving)."""
    import threading

    workflows = harness.engine.workflows
    await harness.engine.create_workflow(
        load_workflow("name: elsewhere\nnodes:\n  - {id: a, pass: {value: 1}}\n")
    )
    workflows.plans.clear()  # compiled by "another process"
    threads: list[int] = []
    validate = workflows.validate

    def counted(spec: Any) -> Any:
        threads.append(threading.get_ident())
        return validate(spec)

    monkeypatch.setattr(workflows, "validate", counted)
    started = await asyncio.gather(
        *(harness.engine.start_execution("elsewhere", {"n": i}) for i in range(20))
    )
    assert len(threads) == 1, "each version compiles once"
    assert threads[0] != threading.get_ident(), "compiled on the event loop's thread"
    finals = [await harness.engine.wait(e.id, timeout=30) for e in started]
    assert {f.state.value for f in finals} == {"SUCCEEDED"}


ONE_NODE = "name: {name}\nnodes:\n  - {{id: a, pass: {{value: {value}}}}}\n"


async def test_starts_after_the_cache_expires_read_the_spec_once_and_see_other_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired entry costs a read of the live version's number, not of the row: the
    version's record (its spec decoded) is read once per process, for a version this process
    did not create too (created by "another replica": the store directly). Another replica's new
    version and delete are still seen once the entry expires."""
    from agentrun.engine import Engine
    from agentrun.engine.loader import spec_to_dict
    from agentrun.integrations import Registry, default_agents
    from agentrun.integrations.core_tools import core_tools
    from agentrun.storage.records import WorkflowRecord
    from agentrun.storage.sql import SqlStore

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    await store.open()
    engine = Engine(store, tools=Registry(core_tools()), agents=default_agents())
    await engine.start()
    now = [1000.0]
    engine.workflows.clock = lambda: now[0]
    rows: list[tuple[Any, ...]] = []  # whole rows read: the spec decoded each time
    get = store.workflows.get_workflow

    async def counted(*args: Any, **kwargs: Any) -> Any:
        rows.append(args)
        return await get(*args, **kwargs)

    monkeypatch.setattr(store.workflows, "get_workflow", counted)

    def stored(value: int) -> dict[str, Any]:
        return spec_to_dict(load_workflow(ONE_NODE.format(name="w", value=value)))

    try:
        await store.create_workflow(WorkflowRecord("default", "w", 0, stored(1), now[0]))
        for i in range(10):
            now[0] += 2 * WORKFLOW_CACHE_SECONDS  # each start finds its entry expired
            execution = await engine.start_execution("w", {"n": i})
            assert execution.version == 1
            assert (await engine.wait(execution.id, timeout=30)).output == {"a": 1}
        assert len(rows) == 1, "the spec of a version is read once, not per start"

        # Another replica (here: the store itself) stores version 2: seen once the entry expires, version 1 still runs.
        await store.create_workflow(WorkflowRecord("default", "w", 0, stored(2), now[0]))
        now[0] += 2 * WORKFLOW_CACHE_SECONDS
        execution = await engine.start_execution("w", {})
        assert execution.version == 2
        assert (await engine.wait(execution.id, timeout=30)).output == {"a": 2}
        assert (await engine.start_execution("w", {}, version=1)).version == 1

        # Another replica deletes it: starts are refused once the entry expires.
        await store.delete_workflow("default", "w")
        now[0] += 2 * WORKFLOW_CACHE_SECONDS
        with pytest.raises(WorkflowNotFound):
            await engine.start_execution("w", {})
        with pytest.raises(WorkflowNotFound):
            await engine.start_execution("w", {}, version=1)
    finally:
        await engine.stop(grace=0)
        await store.close()


async def test_the_records_kept_are_bounded_and_a_delete_drops_them(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflows = harness.engine.workflows
    assert workflows.records.bound == RECORDS_KEPT
    monkeypatch.setattr(workflows.records, "bound", 3)
    for i in range(5):
        await harness.engine.create_workflow(load_workflow(ONE_NODE.format(name=f"w{i}", value=i)))
    assert [k[1] for k in workflows.records.kept()] == ["w2", "w3", "w4"]
    await harness.engine.delete_workflow("w3")
    assert [k[1] for k in workflows.records.kept()] == ["w2", "w4"]
    with pytest.raises(WorkflowNotFound):
        await harness.engine.start_execution("w3", {})


async def test_the_plans_kept_are_bounded_and_a_dropped_one_compiles_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled plans are a bounded cache (PLAN_NODES_KEPT nodes' worth, least recently used
    out): registering many versions does not grow the server's memory without limit. A
    version whose plan was dropped starts and runs, compiled again once from its record; a
    delete drops a workflow's plans; a plan larger than the bound is kept while it is the
    most recent."""
    workflows = harness.engine.workflows
    assert workflows.plans.bound == PLAN_NODES_KEPT
    monkeypatch.setattr(workflows.plans, "bound", 6)  # three one-node plans (weight 2 each)
    for i in range(5):
        await harness.engine.create_workflow(load_workflow(ONE_NODE.format(name=f"w{i}", value=i)))
    assert [k[1] for k in workflows.plans.kept()] == ["w2", "w3", "w4"]
    assert workflows.plans.weight == 6

    compiled: list[str] = []
    validate = workflows.validate

    def counted(spec: Any) -> Any:
        compiled.append(spec.name)
        return validate(spec)

    monkeypatch.setattr(workflows, "validate", counted)
    started = await asyncio.gather(*(harness.engine.start_execution("w0", {}) for _ in range(3)))
    assert compiled == ["w0"], "a dropped plan compiles again, once for concurrent starts"
    for execution in started:
        assert (await harness.engine.wait(execution.id, timeout=30)).output == {"a": 0}
    assert [k[1] for k in workflows.plans.kept()] == ["w3", "w4", "w0"]
    assert workflows.cached_plan("default", "w2", 1) is None  # dropped, not gone:
    assert (
        await harness.engine.wait((await harness.engine.start_execution("w2", {})).id, 30)
    ).output == {"a": 2}

    await harness.engine.delete_workflow("w4")
    assert "w4" not in [k[1] for k in workflows.plans.kept()]
    assert workflows.plans.weight == 2 * len(workflows.plans)

    big = "name: big\nnodes:\n" + "".join(
        f"  - {{id: n{i}, pass: {{value: {i}}}}}\n" for i in range(10)
    )
    await harness.engine.create_workflow(load_workflow(big))
    assert [k[1] for k in workflows.plans.kept()] == ["big"] and workflows.plans.weight == 11


def test_one_lru_bounds_both_caches_by_weight_least_recently_used_out() -> None:
    """The records are counted (weight 1 each), the plans weighed in nodes; in both the least
    recently used goes first (a `get` or a `setdefault` that finds its key makes it the most
    recent), and the most recent value is kept whatever its weight."""
    counted: LRU[str] = LRU(3)
    for i in range(3):
        counted.put(("t", f"w{i}", 1), f"r{i}")
    assert counted.get(("t", "w0", 1)) == "r0"  # w0 is now the most recent
    assert counted.setdefault(("t", "w1", 1), "other") == "r1"  # kept, w1 most recent
    counted.put(("t", "w3", 1), "r3")
    assert [k[1] for k in counted.kept()] == ["w0", "w1", "w3"] and counted.weight == 3
    counted.drop("t", "w1")
    assert [k[1] for k in counted.kept()] == ["w0", "w3"] and counted.weight == 2

    weighed: LRU[list[int]] = LRU(10, len)
    weighed.put(("t", "a", 1), [0] * 4)
    weighed.put(("t", "b", 1), [0] * 4)
    weighed.get(("t", "a", 1))
    weighed.put(("t", "c", 1), [0] * 4)  # 12 > 10: b, the least recently used, goes
    assert [k[1] for k in weighed.kept()] == ["a", "c"] and weighed.weight == 8
    weighed.put(("t", "a", 1), [0] * 2)  # replaced: its weight too
    assert [k[1] for k in weighed.kept()] == ["c", "a"] and weighed.weight == 6
    weighed.put(("t", "huge", 1), [0] * 50)
    assert weighed.kept() == [("t", "huge", 1)] and weighed.weight == 50
