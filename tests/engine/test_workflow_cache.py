"""Starts read workflows through a short-lived cache (engine/workflows.py): a burst of starts
that all miss it reads the store once, and what the read ends with reaches each of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import WorkflowNotFound, load_workflow
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
