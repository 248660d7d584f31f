"""Pause instead of fail (issue 16 item 5), through a real gRPC server and the SDK: a node with
`on_exhausted: pause` whose retries are spent (or whose breaker is open) pauses the execution
with the node's error; a resume runs it again with a fresh attempt count, optionally with new
args (validated, INVALID_ARGUMENT naming the field; FAILED_PRECONDITION when the execution is
not paused on that node); the paused-on-node state survives a restart on SQLite and
PostgreSQL, and a resume with args reaches the replica running the execution through another.
Bulk control (memory, SQLite, PostgreSQL): pause, resume or cancel every execution a filter matches, per
execution acknowledged, a bounded page per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentrun.client import AsyncClient, ExecutionState, IllegalTransition, InvalidArgument
from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.storage.memory import MemoryStore
from agentrun.storage.sql import SqlStore
from agentrun.v1 import execution_service_pb2 as es_pb
from tests.server.conftest import STOP_GRACE
from tests.storage.conftest import PgServer
from tests.storage.templates import migrated_sqlite

pytestmark = pytest.mark.timeout(180)


class Flaky(Tool):
    """`test.flaky`: fails with tool_error while `broken`; records every call's args."""

    name = "test.flaky"
    args_schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}

    def __init__(self) -> None:
        self.broken = True
        self.calls: list[tuple[int, Any]] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append((ctx.attempt, args))
        if self.broken:
            raise ToolFailure("tool_error", f"downstream is down (attempt {ctx.attempt})")
        return {"charged": args["n"]}


PAY = """
name: pay
nodes:
  - id: first
    pass: {value: 1}
  - id: charge
    needs: [first]
    tool: {name: test.flaky, args: {n: 1}}
    retry: {max_attempts: 2, initial_interval: 10ms}
    on_exhausted: pause
  - id: after
    needs: [charge]
    pass: {value: "${{ nodes.charge.output }}"}
output: "${{ nodes.after.output }}"
"""

BROKEN = """
name: breaker
circuit_breakers:
  test.flaky: {failure_threshold: 1, window: 60s, reset_timeout: 1h}
nodes:
  - id: charge
    tool: {name: test.flaky, args: {n: 1}}
    retry: {max_attempts: 5, initial_interval: 10ms}
    on_exhausted: pause
"""

WAITER = """
name: {name}
nodes:
  - id: ask
    wait: {{signal: go}}
"""


class Rig:
    """An engine and a gRPC server on `store`, with the flaky tool; `restart` replaces both."""

    def __init__(self, store: Any, tool: Flaky) -> None:
        self.store, self.tool = store, tool
        self.engine: Engine | None = None
        self.server: AgentrunServer | None = None
        self.client: AsyncClient | None = None
        self.generation = 0

    async def start(self) -> AsyncClient:
        tools = default_tools()
        tools.register(self.tool)
        self.generation += 1
        self.engine = Engine(
            self.store,
            tools=tools,
            agents=default_agents(),
            config=EngineConfig(replica_id=f"r{self.generation}", lease_seconds=2, seed=5),
        )
        await self.engine.start()
        self.server = AgentrunServer(self.engine, ServerConfig.load(env={}))
        await self.server.start("127.0.0.1:0")
        self.client = AsyncClient(f"127.0.0.1:{self.server.port}", api_key="")
        await self.client.__aenter__()
        return self.client

    async def stop(self) -> None:
        assert self.client and self.server and self.engine
        await self.client.__aexit__(None, None, None)
        await self.server.stop(STOP_GRACE)
        await self.engine.stop(grace=0)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig(MemoryStore(), Flaky())
    await rig.start()
    yield rig
    await rig.stop()


async def until_state(client: AsyncClient, execution: str, state: ExecutionState) -> Any:
    async with asyncio.timeout(60):
        while True:
            current = await client.get_execution(execution)
            if current.state is state:
                return current
            await asyncio.sleep(0.02)


async def paused_events(client: AsyncClient, execution: str) -> list[dict[str, Any]]:
    return [
        e.data
        for e in [e async for e in client.list_execution_events(execution)]
        if e.type == "execution.paused"
    ]


async def test_spent_retries_pause_and_a_resume_starts_a_fresh_count(rig: Rig) -> None:
    client = rig.client
    assert client is not None
    await client.create_workflow(load_workflow(PAY))
    execution = (await client.start_execution("pay", {})).id
    paused = await until_state(client, execution, ExecutionState.PAUSED)
    assert paused.error is not None and paused.error.node_id == "charge"
    assert paused.error.type == "tool_error" and "attempt 2" in paused.error.message
    [event] = await paused_events(client, execution)
    assert event["reason"] == "node_exhausted" and event["node"] == "charge"
    assert event["error"]["type"] == "tool_error"
    assert [a for a, _ in rig.tool.calls] == [1, 2]

    # Still broken: the resumed node gets its two attempts again (3 and 4), then pauses again.
    await client.resume_execution(execution)
    async with asyncio.timeout(60):
        while (
            len(rig.tool.calls) < 4
            or (await client.get_execution(execution)).state is not ExecutionState.PAUSED
        ):
            await asyncio.sleep(0.02)
    assert [a for a, _ in rig.tool.calls] == [1, 2, 3, 4]
    assert len(await paused_events(client, execution)) == 2

    rig.tool.broken = False  # the operator fixes the cause
    resumed = await client.resume_execution(execution, node_id="charge")
    assert resumed.state is not ExecutionState.PAUSED and resumed.error is None
    done = await client.wait(execution, timeout=60)
    assert done.state is ExecutionState.SUCCEEDED and done.output == {"charged": 1}
    assert [a for a, _ in rig.tool.calls] == [1, 2, 3, 4, 5]


async def test_an_open_breaker_pauses_at_once(rig: Rig) -> None:
    client = rig.client
    assert client is not None
    await client.create_workflow(load_workflow(BROKEN))
    execution = (await client.start_execution("breaker", {})).id
    paused = await until_state(client, execution, ExecutionState.PAUSED)
    assert paused.error is not None and paused.error.type == "circuit_open"
    assert len(rig.tool.calls) == 1  # the second attempt met the open breaker: no more spent
    nodes = {
        n.node_id: n for n in (await client.get_execution(execution, include_nodes=True)).nodes
    }
    assert nodes["charge"].attempt == 2 and nodes["charge"].error is not None


async def test_bad_resumes_name_the_field_or_the_state(rig: Rig) -> None:
    client = rig.client
    assert client is not None
    await client.create_workflow(load_workflow(PAY))
    await client.create_workflow(load_workflow(WAITER.format(name="asker")))
    execution = (await client.start_execution("pay", {})).id
    await until_state(client, execution, ExecutionState.PAUSED)
    with pytest.raises(InvalidArgument) as bad:
        await client.resume_execution(execution, node_id="charge", args={"n": "seven"})
    assert "args.n" in str(bad.value)
    with pytest.raises(InvalidArgument) as missing:
        await client.resume_execution(execution, node_id="charge", args={})
    assert "args" in str(missing.value) and "'n' is a required property" in str(missing.value)
    with pytest.raises(InvalidArgument) as no_node:
        await client.resume_execution(execution, args={"n": 2})
    assert "node_id" in str(no_node.value)
    with pytest.raises(IllegalTransition):
        await client.resume_execution(execution, node_id="first", args={"n": 2})
    # Paused by hand, not on a node: a resume naming one is refused.
    other = (await client.start_execution("asker", {})).id
    await until_state(client, other, ExecutionState.WAITING)
    await client.pause_execution(other)
    with pytest.raises(IllegalTransition):
        await client.resume_execution(other, node_id="ask")
    assert (await client.get_execution(execution)).state is ExecutionState.PAUSED
    assert len(rig.tool.calls) == 2  # nothing refused ran anything


@pytest.fixture(params=["sqlite", "postgresql"])
async def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    server = None
    if request.param == "sqlite":
        url = migrated_sqlite(tmp_path / "paused.db")
    else:
        server = PgServer()
        url = server.create_database(migrated=True)
    store = SqlStore(url)
    await store.open()
    yield store
    await store.close()
    if server is not None:
        server.drop_all()


async def test_paused_on_a_node_survives_a_restart_and_resumes_with_new_args(
    durable_store: SqlStore,
) -> None:
    rig = Rig(durable_store, Flaky())
    client = await rig.start()
    try:
        await client.create_workflow(load_workflow(PAY))
        execution = (await client.start_execution("pay", {})).id
        await until_state(client, execution, ExecutionState.PAUSED)
    finally:
        await rig.stop()

    client = await rig.start()  # a new engine and server on the same database
    try:
        again = await client.get_execution(execution)
        assert again.state is ExecutionState.PAUSED
        assert again.error is not None and again.error.node_id == "charge"
        with pytest.raises(InvalidArgument):
            await client.resume_execution(execution, node_id="charge", args={"n": 2.5})
        rig.tool.broken = False
        # Wait for the new engine to own it (a resume before is refused as not running here).
        async with asyncio.timeout(60):
            while True:
                try:
                    await client.resume_execution(execution, node_id="charge", args={"n": 7})
                    break
                except IllegalTransition:
                    await asyncio.sleep(0.1)
        done = await client.wait(execution, timeout=60)
        assert done.state is ExecutionState.SUCCEEDED and done.output == {"charged": 7}
        assert rig.tool.calls[-1] == (3, {"n": 7})
        assert [a for a, _ in rig.tool.calls] == [1, 2, 3]
    finally:
        await rig.stop()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def any_rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    server = None
    if request.param == "memory":
        store: Any = MemoryStore()
    else:
        if request.param == "sqlite":
            url = migrated_sqlite(tmp_path / "bulk.db")
        else:
            server = PgServer()
            url = server.create_database(migrated=True)
        store = SqlStore(url)
        await store.open()
    rig = Rig(store, Flaky())
    await rig.start()
    yield rig
    await rig.stop()
    if request.param != "memory":
        await store.close()
    if server is not None:
        server.drop_all()


async def test_a_resume_with_args_through_another_replica(tmp_path: Path) -> None:
    """Replica A runs the execution paused on its node; the resume with args reaches replica B,
    which hands it to A through the store (the control signal carries the override)."""
    server = PgServer()
    url = server.create_database(migrated=True)
    stores = [SqlStore(url), SqlStore(url)]
    for store in stores:
        await store.open()
    tool = Flaky()
    a, b = Rig(stores[0], tool), Rig(stores[1], tool)
    b.generation = 10  # another replica id
    try:
        client_a = await a.start()
        await client_a.create_workflow(load_workflow(PAY))
        execution = (await client_a.start_execution("pay", {})).id
        await until_state(client_a, execution, ExecutionState.PAUSED)
        client_b = await b.start()
        assert a.engine is not None and execution in a.engine._runs  # A owns it
        with pytest.raises(InvalidArgument):
            await client_b.resume_execution(execution, node_id="charge", args={"n": "x"})
        tool.broken = False
        await client_b.resume_execution(execution, node_id="charge", args={"n": 9})
        done = await client_b.wait(execution, timeout=60)
        assert done.state is ExecutionState.SUCCEEDED and done.output == {"charged": 9}
        assert tool.calls[-1] == (3, {"n": 9})
    finally:
        for rig in (b, a):
            if rig.client is not None:
                await rig.stop()
        for store in stores:
            await store.close()
        server.drop_all()


async def test_bulk_pause_resume_cancel_by_filter(any_rig: Rig) -> None:
    rig = any_rig
    client = rig.client
    assert client is not None and rig.server is not None
    await client.create_workflow(load_workflow(WAITER.format(name="batch")))
    await client.create_workflow(load_workflow(WAITER.format(name="bystander")))
    ids = [(await client.start_execution("batch", {})).id for _ in range(5)]
    bystander = (await client.start_execution("bystander", {})).id
    for execution in (*ids, bystander):
        await until_state(client, execution, ExecutionState.WAITING)

    paused = [o async for o in client.control_executions("pause", workflow="batch", page_size=2)]
    assert sorted(o.execution_id for o in paused) == sorted(ids)
    assert all(o.done and o.state is ExecutionState.PAUSED for o in paused)
    assert (await client.get_execution(bystander)).state is ExecutionState.WAITING

    # A second pause is refused per execution, with the state it found.
    again = [o async for o in client.control_executions("pause", workflow="batch")]
    assert len(again) == 5 and not any(o.done for o in again)
    assert {o.reason for o in again} == {"ILLEGAL_TRANSITION"} and {o.state for o in again} == {
        ExecutionState.PAUSED
    }

    # One call is one bounded page, with a token for the rest.
    stub = client.execution_service
    first = await stub.ControlExecutions(
        es_pb.ControlExecutionsRequest(
            action=es_pb.ControlExecutionsRequest.ACTION_RESUME,
            filter='workflow = "batch" AND state = PAUSED',
            page_size=3,
        )
    )
    assert (
        len(first.outcomes) == 3 and first.next_page_token and all(o.done for o in first.outcomes)
    )
    rest = await stub.ControlExecutions(
        es_pb.ControlExecutionsRequest(
            action=es_pb.ControlExecutionsRequest.ACTION_RESUME,
            filter='workflow = "batch" AND state = PAUSED',
            page_size=3,
            page_token=first.next_page_token,
        )
    )
    assert len(rest.outcomes) == 2 and not rest.next_page_token
    for execution in ids:
        assert (await client.get_execution(execution)).state is ExecutionState.WAITING

    cancelled = [
        o async for o in client.control_executions("cancel", workflow="batch", states=["WAITING"])
    ]
    assert len(cancelled) == 5 and all(
        o.done and o.state is ExecutionState.CANCELLED for o in cancelled
    )
    assert (await client.get_execution(bystander)).state is ExecutionState.WAITING

    with pytest.raises(grpc.aio.AioRpcError) as no_filter:
        await stub.ControlExecutions(
            es_pb.ControlExecutionsRequest(action=es_pb.ControlExecutionsRequest.ACTION_CANCEL)
        )
    assert no_filter.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "filter" in str(
        no_filter.value.details()
    )
    with pytest.raises(grpc.aio.AioRpcError) as no_action:
        await stub.ControlExecutions(es_pb.ControlExecutionsRequest(filter='workflow = "batch"'))
    assert no_action.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "action" in str(
        no_action.value.details()
    )


async def test_bad_on_exhausted_values_are_load_errors_naming_the_field(rig: Rig) -> None:
    client = rig.client
    assert client is not None
    bad_word = "name: x\nnodes:\n  - id: a\n    tool: {name: core.echo, args: {}}\n    on_exhausted: sleep\n"
    with pytest.raises(InvalidArgument) as word:
        await client.create_workflow(source=bad_word)
    assert "nodes[0].on_exhausted" in str(word.value) and "pause, fail" in str(word.value)
    bad_kind = "name: y\nnodes:\n  - id: a\n    pass: {value: 1}\n    on_exhausted: pause\n"
    with pytest.raises(InvalidArgument) as kind:
        await client.create_workflow(source=bad_kind)
    assert "nodes[0].on_exhausted" in str(kind.value) and "pass node cannot pause" in str(
        kind.value
    )


CHILD = """
name: child
input_schema: {type: object, required: [ok_at], properties: {ok_at: {type: integer}}}
nodes:
  - id: work
    tool: {name: core.fail, args: {type: child.broken, succeed_on_attempt: "${{ input.ok_at }}"}}
output: "${{ nodes.work.output }}"
"""

PARENT = """
name: parent
nodes:
  - id: delegate
    workflow: {name: child, input: {ok_at: 100}}
    on_exhausted: pause
output: "${{ nodes.delegate.output }}"
"""


async def test_a_workflow_node_resumes_with_a_new_child_input(rig: Rig) -> None:
    client = rig.client
    assert client is not None
    await client.create_workflow(load_workflow(CHILD))
    await client.create_workflow(load_workflow(PARENT))
    execution = (await client.start_execution("parent", {})).id
    paused = await until_state(client, execution, ExecutionState.PAUSED)
    assert paused.error is not None and paused.error.node_id == "delegate"
    with pytest.raises(InvalidArgument) as bad:
        await client.resume_execution(execution, node_id="delegate", args={"ok_at": "soon"})
    assert "args.ok_at" in str(bad.value)  # the child's input_schema
    await client.resume_execution(execution, node_id="delegate", args={"ok_at": 1})
    done = await client.wait(execution, timeout=60)
    assert done.state is ExecutionState.SUCCEEDED and done.output == {"attempt": 1}
