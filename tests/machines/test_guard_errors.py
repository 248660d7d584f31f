"""A state machine survives one bad event (issue 12, item 5).

A guard that cannot be evaluated for an event a client sent (the order example's
`event.data.amount` when PAY comes without data) refuses that event with FAILED_PRECONDITION
naming the guard, its expression and the missing field; the instance keeps its state, data and
history, and the next good event works. Checked on the engine (memory, SQLite), over gRPC with
the raw status, and through `agentrun sm send` on examples/order_state_machine.yaml.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.client import AsyncClient
from agentrun.engine.machine import GuardFailed
from agentrun.engine.machine.guards import missing_field
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.storage.machines import EntryKind, InstanceState
from agentrun.storage.memory import MemoryStore
from agentrun.v1 import state_machine_service_pb2 as pb
from agentrun.v1 import state_machine_service_pb2_grpc as pb_grpc
from tests.machines.conftest import close, make
from tests.machines.test_cli import run_cli
from tests.server.conftest import STOP_GRACE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GUARD = "states.pending.on.PAY[0].guard"
EXPRESSION = "event.data.amount >= input.total"
ORDER = f"""
name: order
mode: state_machine
initial: pending
data: {{paid: 0, tries: 0}}
states:
  pending:
    on:
      PAY:
        - guard: "${{{{ {EXPRESSION} }}}}"
          target: paid
          assign: {{paid: "${{{{ event.data.amount }}}}"}}
        - target: pending
          assign: {{tries: "${{{{ data.tries + 1 }}}}"}}
    after: {{1h: expired}}
  paid: {{final: true}}
  expired: {{final: true}}
"""


@pytest.mark.parametrize(
    ("data", "field", "why"),
    [
        (None, "event.data.amount", "event.data is null"),
        ({"nope": 1}, "event.data.amount", "event.data has no field 'amount'"),
        ("ten", "event.data.amount", "event.data is a string, not an object"),
    ],
)
async def test_a_guard_error_refuses_the_event_and_changes_nothing(h, data, field, why) -> None:
    await h.define(ORDER)
    inst = await h.machines.create_instance("order", {"total": 10})
    before = await h.machines.get_instance(inst.id)
    history = await h.machines.list_history(inst.id)
    timers = await h.machines.store.list_timers()

    with pytest.raises(GuardFailed) as caught:
        await h.machines.send_event(inst.id, "PAY", data, event_id="pay-1")
    error = caught.value
    assert (error.guard, error.expression, error.field) == (GUARD, EXPRESSION, field)
    assert GUARD in error.message and EXPRESSION in error.message and why in error.message
    assert error.reason == "ILLEGAL_TRANSITION" and error.current_state == "pending"
    assert error.metadata["field"] == field and error.metadata["expression"] == EXPRESSION

    after = await h.machines.get_instance(inst.id)
    assert (after.state, after.current, after.data, after.last_sequence, after.error) == (
        before.state,
        before.current,
        before.data,
        before.last_sequence,
        before.error,
    )
    assert after.state is InstanceState.ACTIVE
    assert await h.machines.list_history(inst.id) == history
    assert await h.machines.store.list_timers() == timers

    # The refused id was not spent, and the instance takes the next good event.
    record, entry = await h.machines.send_event(inst.id, "PAY", {"amount": 12}, event_id="pay-1")
    assert entry.kind is EntryKind.TRANSITION and record.current == "paid"
    assert record.state is InstanceState.COMPLETED and record.data == {"paid": 12, "tries": 0}


async def test_a_refused_event_behind_a_queue_does_not_disturb_the_others(mem) -> None:
    await mem.define(ORDER)
    inst = await mem.machines.create_instance("order", {"total": 10})
    results = await asyncio.gather(
        mem.machines.send_event(inst.id, "PAY", {"amount": 1}),
        mem.machines.send_event(inst.id, "PAY", None),
        mem.machines.send_event(inst.id, "PAY", {"amount": 2}),
        return_exceptions=True,
    )
    assert isinstance(results[1], GuardFailed)
    final = await mem.machines.get_instance(inst.id)
    assert final.data["tries"] == 2 and final.state is InstanceState.ACTIVE
    assert [e.kind for e in await mem.machines.list_history(inst.id)] == [
        EntryKind.CREATED,
        EntryKind.TRANSITION,
        EntryKind.TRANSITION,
    ]


def test_missing_field_names_the_first_selection_the_values_lack() -> None:
    act = {"event": {"name": "E", "data": {"a": {"b": 1}}}, "data": {"n": 1}, "input": {}}
    assert missing_field("event.data.a.b > data.n", act) is None
    assert missing_field("event.data.a.c > 1", act) == (
        "event.data.a.c",
        "event.data.a has no field 'c'",
    )
    assert missing_field("data.n + input.total", act) == (
        "input.total",
        "input has no field 'total'",
    )
    # Method calls and text inside strings are not fields.
    assert missing_field("event.data.a.size() > 0 && 'input.x' != ''", act) is None
    assert missing_field("event.data.a.b.c", act) == (
        "event.data.a.b.c",
        "event.data.a.b is a number, not an object, so event.data.a.b.c does not exist",
    )


GATE = """
name: gate
mode: state_machine
initial: shut
states:
  shut: {on: {OPEN: {guard: "${{ event.data.key == 'k' }}", target: open}}}
  open: {final: true}
"""


# -- over gRPC ----------------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[AsyncClient, str]]:
    h = await make(MemoryStore())
    server = AgentrunServer(h.engine, ServerConfig.load(env={}))
    add_to_server(server, h.machines)
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    async with AsyncClient(address, api_key="") as client:
        for example in ("fulfil_workflow.yaml", "order_state_machine.yaml"):
            await client.create_workflow(source=(EXAMPLES / example).read_text())
        await client.create_workflow(source=GATE)
        yield client, address
    await server.stop(STOP_GRACE)
    await close(h)


async def test_send_event_answers_failed_precondition_naming_guard_and_field(served) -> None:
    client, _ = served
    inst = await client.machines.create_instance("order", {"id": "o-1", "total": 30})
    stub = pb_grpc.StateMachineServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.SendEvent(pb.SendEventRequest(name=inst.name, event="PAY"))
    assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    text = raw.value.details()
    assert GUARD in text and EXPRESSION in text and "event.data.amount" in text
    info = error_details_pb2.ErrorInfo()
    for detail in rpc_status.from_call(raw.value).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    assert info.reason == "ILLEGAL_TRANSITION"
    assert {
        "guard": GUARD,
        "expression": EXPRESSION,
        "field": "event.data.amount",
        "current_state": "pending",
        "event": "PAY",
    }.items() <= dict(info.metadata).items()
    got = await client.machines.get_instance(inst)
    assert (got.state.value, got.current_state, got.data, got.last_sequence) == (
        "ACTIVE",
        "pending",
        {"paid": 0, "attempts": 0},
        1,
    )
    _, entry = await client.machines.send_event(inst, "PAY", {"amount": 10})
    assert (entry.to_state, entry.assigned) == ("pending", {"attempts": 1})


# -- through the CLI ----------------------------------------------------------------------


async def test_cli_sm_send_exits_non_zero_on_a_refused_event(served) -> None:
    _, address = served

    def cli(*argv: str) -> tuple[int, str, str]:
        return run_cli(*argv, "--server", address, "--api-key", "")

    def flow() -> None:
        code, out, _ = cli("sm", "create", "order", "--input", '{"id": "o-17", "total": 30}')
        assert code == 0
        ident = out.strip()
        code, out, err = cli("sm", "send", ident, "PAY")  # no --data: the guard cannot read it
        assert code == 1, (out, err)
        assert "failed_precondition" in err and GUARD in err and EXPRESSION in err
        assert "event.data is null" in err and err.count("\n") == 1
        code, out, _ = cli("sm", "get", ident, "--json")
        got = json.loads(out)
        assert got["state"].removeprefix("STATE_") == "ACTIVE"  # either JSON shape of the CLI
        assert (got["current_state"], got["data"]) == ("pending", {"paid": 0, "attempts": 0})
        code, out, _ = cli("sm", "history", ident)
        assert len(out.splitlines()) == 1  # only the creation
        code, out, _ = cli("sm", "send", ident, "PAY", "--data", '{"amount": 10}')
        assert code == 0 and "pending -> pending" in out
        code, out, _ = cli("sm", "send", ident, "SHIP")
        assert code == 2  # the state does not accept it
        code, _, _ = cli("sm", "cancel", ident)
        assert code == 0
        code, _, err = cli("sm", "send", ident, "PAY", "--data", '{"amount": 30}')
        assert code == 1 and "CANCELLED" in err  # an ended instance takes no events
        code, _, err = cli("sm", "cancel", ident)
        assert code == 1 and "failed_precondition" in err

    def no_transition() -> None:
        code, out, _ = cli("sm", "create", "gate")
        ident = out.strip()
        code, out, _ = cli("sm", "send", ident, "OPEN", "--data", '{"key": "x"}')
        assert code == 1 and "NO_TRANSITION" in out  # no guard held: nothing changed
        code, out, _ = cli("sm", "send", ident, "OPEN", "--data", '{"key": "k"}')
        assert code == 0 and "shut -> open" in out

    await asyncio.to_thread(flow)
    await asyncio.to_thread(no_transition)


async def test_cli_signal_exits_non_zero_when_the_signal_is_refused(served) -> None:
    """`signal` follows the same rule as `sm send`: a refused call is never exit 0."""
    client, address = served
    await client.create_workflow(source="name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n")
    doomed = await client.start_execution("hold", {})
    await client.cancel_execution(doomed)
    await client.wait(doomed, timeout=60)  # ended: it takes no signal

    def cli(*argv: str) -> tuple[int, str, str]:
        return run_cli(*argv, "--server", address, "--api-key", "")

    def flow() -> None:
        code, _, err = cli("signal", doomed.id, "go", "--data", "{}", "--id", "late-1")
        assert code == 1 and "failed_precondition" in err
        code, _, err = cli("signal", "nope", "go")
        assert code == 1 and "not_found" in err
        code, _, _ = cli("signal", doomed.id, "go", "--data", "{nope")
        assert code == 2

    await asyncio.to_thread(flow)
