"""`create_execution_soon(..., then=...)`: the creation's done callback, which the SQL group
commit calls as it settles the future (a start's run is launched and its caller answered a
loop turn sooner than by an added done callback), in the caller's context, once; on every
store (the memory store adds it as a done callback)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from agentrun.storage.base import Store
from agentrun.storage.records import ExecutionRecord
from tests.storage.conftest import Backend
from tests.storage.factories import execution_record

_WHO = contextvars.ContextVar("who", default="nobody")
Creating = asyncio.Future[tuple[ExecutionRecord, bool]]


async def test_then_runs_as_the_commit_settles_before_added_callbacks(store: Store) -> None:
    """`then` sees the settled future before any done callback added to it runs (those run a
    loop turn later), in the context of the code that queued the creation."""
    seen: list[Any] = []

    def then(done: Creating) -> None:
        seen.append(("then", done.result()[0].id, done.result()[1], _WHO.get()))

    async def start() -> Creating:
        _WHO.set("the start")
        creating = store.create_execution_soon(execution_record("ex-1"), then=then)
        creating.add_done_callback(lambda done: seen.append("added"))
        return creating

    creating = await asyncio.create_task(start())
    await creating
    await asyncio.sleep(0)
    assert seen == [("then", "ex-1", True, "the start"), "added"]


async def test_a_then_that_fails_spares_its_group_and_is_reported(store: Store) -> None:
    """A `then` that raises is reported as a failing done callback is (the loop's exception
    handler); the other creations of its group are settled and their `then` called."""
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
    called: list[str] = []

    def failing(done: Creating) -> None:
        raise RuntimeError("boom")

    def fine(done: Creating) -> None:
        called.append(done.result()[0].id)

    try:
        first = store.create_execution_soon(execution_record("ex-1"), then=failing)
        second = store.create_execution_soon(execution_record("ex-2"), then=fine)
        assert [r[1] for r in await asyncio.gather(first, second)] == [True, True]
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
    assert called == ["ex-2"]
    assert [type(c.get("exception")) for c in reported] == [RuntimeError]


async def test_then_is_called_once_even_when_the_caller_cancelled_the_future(
    store: Store, backend: Backend
) -> None:
    """On SQL a future cancelled by its caller still has its creation written; `then` is
    called once, with the cancelled future, when its group is written."""
    if backend.name == "memory":
        pytest.skip("the memory store's creation is a task: cancelled with its future")
    calls: list[bool] = []
    creating = store.create_execution_soon(
        execution_record("ex-1"), then=lambda done: calls.append(done.cancelled())
    )
    creating.cancel()
    await store.create_execution(execution_record("ex-2"))  # the group after it
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == [True]
    assert await store.get_execution("ex-1") is not None
