"""State machine fixtures: the real engine and MachineEngine over a memory store, SQLite or
PostgreSQL; a real grpc.aio server with StateMachineService on port 0; a recording tool."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.machine import MachineEngine
from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from tests.storage.conftest import PgServer
from tests.storage.templates import migrated_sqlite

# Set: the PostgreSQL tests use this database; unset: one of their own on the shared server,
# created on first use and dropped at the end of the session (the shared `test` database may
# hold another branch's schema).
PG_URL = os.environ.get("AGENTRUN_TEST_PG")
_private: dict[str, Any] = {}


def pg_url() -> str:
    if PG_URL:
        return PG_URL
    if "url" not in _private:
        server = _private["server"] = PgServer()
        _private["url"] = server.create_database()
    return str(_private["url"])


@pytest.fixture(scope="session", autouse=True)
def _drop_private_database() -> Iterator[None]:
    yield
    if "server" in _private:
        _private["server"].drop_all()


class Recorder(Tool):
    """`test.record`: appends `args.label` to `calls`; fails while `args.fail_until` > attempt."""

    name = "test.record"

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append(args.get("label"))
        if args.get("fail_until", 0) > ctx.attempt or args.get("fail"):
            raise ToolFailure(
                args.get("type", "tool_error"),
                f"{args.get('label')} failed on attempt {ctx.attempt}",
            )
        return {"label": args.get("label"), "attempt": ctx.attempt}


class Harness:
    def __init__(self, engine: Engine, machines: MachineEngine, recorder: Recorder) -> None:
        self.engine = engine
        self.machines = machines
        self.recorder = recorder

    async def define(self, *texts: str) -> None:
        for text in texts:
            await self.engine.create_workflow(load_workflow(text))


async def make(
    store: Any,
    *tools: Tool,
    replica: str | None = None,
    sweep_interval: float | None = None,
    **config: Any,
) -> Harness:
    """An engine and its MachineEngine on `store`; each a replica of its own (`replica`, or a
    fresh id), as replicas sharing a database must be."""
    recorder = Recorder()
    engine = Engine(
        store,
        tools=Registry([*core_tools(), recorder, *tools]),
        agents=default_agents(),
        config=EngineConfig(replica_id=replica or unique("replica"), **config),
    )
    await engine.start()
    machines = MachineEngine(engine, sweep_interval=sweep_interval)
    await machines.start()
    return Harness(engine, machines, recorder)


async def close(h: Harness) -> None:
    await h.machines.stop()
    await h.engine.stop(grace=0)


@pytest.fixture(params=["memory", "sqlite"])
async def h(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Harness]:
    store = await open_backend(request.param, tmp_path)
    harness = await make(store)
    yield harness
    await close(harness)
    await store.close()


@pytest.fixture
async def mem() -> AsyncIterator[Harness]:
    from agentrun.storage.memory import MemoryStore

    harness = await make(MemoryStore())
    yield harness
    await close(harness)


async def open_backend(kind: str, tmp_path: Any) -> Any:
    if kind == "memory":
        from agentrun.storage.memory import MemoryStore

        return MemoryStore()
    from agentrun.storage.sql import SqlStore

    if kind == "sqlite":
        path = Path(tmp_path) / "machines.db"  # replicas of a test share the file
        store = SqlStore(f"sqlite+aiosqlite:///{path}" if path.exists() else migrated_sqlite(path))
    else:
        store = SqlStore(pg_url())
    try:
        await store.open()
    except Exception as exc:
        pytest.skip(f"{kind} unavailable: {exc}")
    return store


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def until(predicate: Any, timeout: float = 30.0) -> None:
    """Polls a sync or async predicate until it holds; the bound is generous (a loaded
    machine is slow) and only decides how long a failing test takes to say so."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


async def history_longer_than(h: Harness, instance_id: str, n: int) -> bool:
    return len(await h.machines.list_history(instance_id)) > n


async def instance_exists(machines: MachineEngine, instance_id: str) -> bool:
    return await machines.store.get_instance(instance_id) is not None
