"""StateMachineService through a real grpc.aio server and the SDK, over SQLite and
PostgreSQL: create (request_id), get, list (filters, pages), SendEvent (rejection details,
idempotent ids under concurrency), history pages, available events, watch with a cursor, and
a hybrid machine whose invoked DAG fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.client import AsyncClient, Client
from agentrun.client.errors import NotFound
from agentrun.client.machines import (
    AsyncMachinesClient,
    EventNotAccepted,
    InstanceState,
    MachinesClient,
    TransitionKind,
)
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.v1 import state_machine_service_pb2 as pb
from agentrun.v1 import state_machine_service_pb2_grpc as pb_grpc
from tests.machines.conftest import Harness, close, make, open_backend
from tests.server.conftest import STOP_GRACE

ORDER = """
name: order
mode: state_machine
initial: pending
data: {paid: 0, count: 0}
states:
  pending:
    on:
      PAY:
        - guard: "${{ event.data.amount >= input.total }}"
          target: paid
          assign: {paid: "${{ event.data.amount }}"}
        - target: pending
          assign: {count: "${{ data.count + 1 }}"}
      CANCEL: cancelled
  paid: {on: {SHIP: shipped}}
  shipped: {final: true}
  cancelled: {final: true}
"""


class Env:
    def __init__(self, h: Harness, server: AgentrunServer, client: AsyncClient) -> None:
        self.h = h
        self.server = server
        self.client = client
        self.sm = client.machines
        assert isinstance(self.sm, AsyncMachinesClient)


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Env]:
    store = await open_backend(request.param, tmp_path)
    h = await make(store)
    server = AgentrunServer(h.engine, ServerConfig.load(env={}))
    add_to_server(server, h.machines)
    port = await server.start("127.0.0.1:0")
    async with AsyncClient(f"127.0.0.1:{port}", api_key="") as client:
        yield Env(h, server, client)
    await server.stop(STOP_GRACE)
    await close(h)
    await store.close()


def _name(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _define(env: Env, text: str, name: str) -> None:
    await env.client.create_workflow(source=text.replace("name: order", f"name: {name}", 1))


async def test_create_get_send_history(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    first = await env.sm.create_instance(name, {"total": 10}, request_id=f"{name}-r")
    again = await env.sm.create_instance(name, {"total": 10}, request_id=f"{name}-r")
    assert (
        first.id == again.id
        and first.state is InstanceState.ACTIVE
        and first.current_state == "pending"
    )
    inst, step = await env.sm.send_event(first, "PAY", {"amount": 3})
    assert (inst.current_state, step.kind, step.transition_index, inst.data) == (
        "pending",
        TransitionKind.TRANSITION,
        1,
        {"paid": 0, "count": 1},
    )
    inst, step = await env.sm.send_event(first, "PAY", {"amount": 10}, event_id="pay-1")
    assert (
        inst.current_state == "paid"
        and step.assigned == {"paid": 10}
        and step.transition_index == 0
    )
    assert await env.sm.available_events(first) == ["SHIP"]
    got = await env.sm.get_instance(first.id)
    assert got.current_state == "paid" and got.last_sequence == 3
    history = [e async for e in env.sm.history(first, page_size=1)]
    assert [(e.sequence, e.event, e.from_state, e.to_state) for e in history] == [
        (1, "create", "", "pending"),
        (2, "PAY", "pending", "pending"),
        (3, "PAY", "pending", "paid"),
    ]
    assert history[2].event_id == "pay-1" and history[2].event_data == {"amount": 10}


async def test_unaccepted_event_is_failed_precondition_with_accepted_events(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    inst = await env.sm.create_instance(name, {"total": 10})
    with pytest.raises(EventNotAccepted) as caught:
        await env.sm.send_event(inst, "SHIP")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.accepted_events == ["CANCEL", "PAY"]
    # The raw status: ErrorInfo and one PreconditionFailure violation per accepted event.
    stub = pb_grpc.StateMachineServiceStub(env.client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.SendEvent(pb.SendEventRequest(name=inst.name, event="SHIP"))
    status = rpc_status.from_call(raw.value)
    events = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            events += [v.subject for v in failure.violations if v.type == "EVENT"]
    assert events == ["CANCEL", "PAY"]
    kinds = [e.kind async for e in env.sm.history(inst)]
    assert kinds == [TransitionKind.CREATED, TransitionKind.REJECTED, TransitionKind.REJECTED]


async def test_unknown_instance_is_not_found(env: Env) -> None:
    with pytest.raises(NotFound) as caught:
        await env.sm.get_instance("nope123")
    assert caught.value.reason == "INSTANCE_NOT_FOUND"
    with pytest.raises(NotFound):
        await env.sm.send_event("nope123", "X")


async def test_100_concurrent_sends_with_10_ids_make_exactly_10_transitions(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    inst = await env.sm.create_instance(name, {"total": 1000})
    results = await asyncio.gather(
        *(
            env.sm.send_event(inst, "PAY", {"amount": 1}, event_id=f"id-{n % 10}")
            for n in range(100)
        )
    )
    sequences = {step.sequence for _, step in results}
    assert len(sequences) == 10
    history = [e async for e in env.sm.history(inst)]
    assert len([e for e in history if e.kind is TransitionKind.TRANSITION]) == 10
    assert sorted(e.event_id for e in history[1:]) == sorted(f"id-{n}" for n in range(10))
    assert (await env.sm.get_instance(inst)).data["count"] == 10


async def test_list_filters_and_pages(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    ids = [(await env.sm.create_instance(name, {"total": 1})).id for _ in range(5)]
    await env.sm.send_event(ids[0], "PAY", {"amount": 1})
    await env.sm.send_event(ids[1], "CANCEL")
    everything = [i.id async for i in env.sm.list_instances(workflow=name, page_size=2)]
    assert everything == ids
    paid = [i.id async for i in env.sm.list_instances(workflow=name, current_state="paid")]
    assert paid == [ids[0]]
    done = [
        i.id async for i in env.sm.list_instances(workflow=name, states=[InstanceState.COMPLETED])
    ]
    assert done == [ids[1]]
    active = [
        i.id
        async for i in env.sm.list_instances(
            workflow=name, states=["ACTIVE"], current_state="pending"
        )
    ]
    assert active == ids[2:]


async def test_watch_resumes_after_a_cursor_and_ends_with_the_instance(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    inst = await env.sm.create_instance(name, {"total": 5})
    seen: list[int] = []

    async def watch(after: int) -> list[tuple[int, str]]:
        return [
            (e.sequence, e.event)
            async for e in env.sm.watch(inst, after_sequence=after, timeout=10)
        ]

    task = asyncio.create_task(watch(0))
    await asyncio.sleep(0.1)
    await env.sm.send_event(inst, "PAY", {"amount": 5})
    await env.sm.send_event(inst, "SHIP")
    entries = await task
    seen = [s for s, _ in entries]
    assert seen == [1, 2, 3] and entries[-1][1] == "SHIP"
    assert await watch(2) == [(3, "SHIP")]


FULFIL = """
name: {name}
nodes:
  - {{id: reserve, tool: {{name: core.fail, args: {{type: out_of_stock, message: "no stock"}}}}}}
"""
HYBRID = """
name: {name}
mode: state_machine
initial: paid
states:
  paid:
    invoke: {{workflow: {child}, input: {{order: "${{{{ input.id }}}}"}}}}
    on_done: {{target: shipped}}
    on_error: {{target: failed, assign: {{reason: "${{{{ event.data.type }}}}"}}}}
  shipped: {{final: true}}
  failed: {{final: true}}
"""


async def test_hybrid_invoked_dag_fails_and_on_error_is_taken(env: Env) -> None:
    child, name = _name("fulfil"), _name("shop")
    await env.client.create_workflow(source=FULFIL.format(name=child))
    await env.client.create_workflow(source=HYBRID.format(name=name, child=child))
    inst = await env.sm.create_instance(name, {"id": "o-9"})
    final = await env.sm.wait(inst, timeout=20)
    assert (final.state, final.current_state, final.data) == (
        InstanceState.COMPLETED,
        "failed",
        {"reason": "out_of_stock"},
    )
    execution = await env.client.get_execution(inst.invoked_execution)
    assert execution.state.value == "FAILED"
    last = [e async for e in env.sm.history(inst)][-1]
    assert last.event == "invoke:error" and last.to_state == "failed"


async def test_blocking_client_sync(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    target = f"127.0.0.1:{env.server.port}"

    def run() -> tuple[Any, ...]:
        with Client(target, api_key="") as client:
            sm = MachinesClient(client)
            inst = sm.create_instance(name, {"total": 2})
            after, step = sm.send_event(inst, "PAY", {"amount": 2})
            try:
                sm.send_event(inst, "NOPE")
            except EventNotAccepted as exc:
                accepted = exc.accepted_events
            return after.current_state, step.kind, accepted, [e.event for e in sm.history(inst)]

    current, kind, accepted, events = await asyncio.to_thread(run)
    assert (current, kind, accepted, events) == (
        "paid",
        TransitionKind.TRANSITION,
        ["SHIP"],
        ["create", "PAY", "NOPE"],
    )


async def test_cancel_instance(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    inst = await env.sm.create_instance(name, {"total": 5})
    cancelled = await env.sm.cancel_instance(inst, reason="customer asked")
    assert (
        cancelled.state is InstanceState.CANCELLED and cancelled.error.message == "customer asked"
    )
    assert await env.sm.available_events(inst) == []
    from agentrun.client.errors import IllegalTransition

    with pytest.raises(IllegalTransition):
        await env.sm.cancel_instance(inst)
    last = [e async for e in env.sm.history(inst)][-1]
    assert last.kind is TransitionKind.CANCELLED and last.instance_state is InstanceState.CANCELLED


async def test_watch_ends_resumably_when_the_server_drains(env: Env) -> None:
    name = _name("order")
    await _define(env, ORDER, name)
    inst = await env.sm.create_instance(name, {"total": 5})
    stub = pb_grpc.StateMachineServiceStub(env.client.channel)
    call = stub.WatchInstance(pb.WatchInstanceRequest(name=inst.name))
    first = await call.read()
    assert first.transition.sequence == 1
    await env.server.drain()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                break
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    metadata = {}
    for detail in rpc_status.from_call(caught.value).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata = dict(info.metadata)
    assert metadata["last_sequence"] == "1"
