"""Saga compensation: order per strategy (from a ledger the tools write), failures,
cancellation with compensation, and a restart in the middle of compensating."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState
from tests.engine.conftest import eventually


class Booking(Tool):
    """Reserves or refunds; writes (action, what, idempotency key) to a shared ledger."""

    effect = Effect.COMPENSABLE

    def __init__(self, name: str, ledger: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.ledger = ledger

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await asyncio.sleep(args.get("sleep", 0))
        if args.get("fail"):
            raise ToolFailure(args.get("type", "tool_error"), f"{args['what']} failed")
        self.ledger.append((self.name, args["what"], ctx.idempotency_key))
        return {"id": f"{args['what']}-1"}


@pytest.fixture
def ledger() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def extra_tools(ledger):
    return [Booking("book", ledger), Booking("undo", ledger)]


def saga(
    strategy: str, *, charge_fails: bool = True, refund_hotel_fails: bool = False, extra: str = ""
) -> str:
    return f"""
name: trip
compensation: {{strategy: {strategy}}}
error_handlers:
  - match: {{nodes: "charge"}}
    action: compensate
nodes:
  - id: flight
    tool: {{name: book, args: {{what: flight}}}}
    compensate: {{tool: {{name: undo, args: {{what: "${{{{ output.id }}}}"}}}}}}
  - id: hotel
    needs: [flight]
    tool: {{name: book, args: {{what: hotel}}}}
    compensate: {{tool: {{name: undo, args: {{what: "${{{{ output.id }}}}", fail: {str(refund_hotel_fails).lower()}}}}}}}
  - id: car
    needs: [hotel]
    tool: {{name: book, args: {{what: car}}}}
    compensate: {{tool: {{name: undo, args: {{what: "${{{{ output.id }}}}"}}}}}}
  - id: note
    needs: [car]
    pass: {{value: no compensation here}}
  - id: charge
    needs: [note]
    tool: {{name: book, args: {{what: charge, fail: {str(charge_fails).lower()}, type: payments.declined}}}}
{extra}"""


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("reverse", ["car-1", "hotel-1", "flight-1"]),
        ("sequential", ["flight-1", "hotel-1", "car-1"]),
    ],
)
async def test_compensation_order_per_strategy(harness, ledger, strategy, expected) -> None:
    final, nodes = await harness.run(saga(strategy))
    assert final.state is ExecutionState.COMPENSATED
    undone = [what for tool, what, _ in ledger if tool == "undo"]
    assert undone == expected
    assert {n: nodes[n].state for n in ("flight", "hotel", "car")} == dict.fromkeys(
        ("flight", "hotel", "car"), NodeState.COMPENSATED
    )
    assert nodes["charge"].state is NodeState.FAILED
    assert final.error["type"] == "payments.declined"
    assert final.error["details"]["compensated"] == [w.split("-")[0] for w in expected]
    # Each compensation carries its own idempotency key.
    keys = [k for tool, _, k in ledger if tool == "undo"]
    assert all(k.endswith("/compensate") for k in keys) and len(set(keys)) == 3


async def test_parallel_compensation_undoes_all(harness, ledger) -> None:
    final, _ = await harness.run(saga("parallel"))
    assert final.state is ExecutionState.COMPENSATED
    assert sorted(w for t, w, _ in ledger if t == "undo") == ["car-1", "flight-1", "hotel-1"]
    events = await harness.events(final.id)
    started = [
        e.sequence for e in events if e.type == "node.running" and e.node_id.endswith(".compensate")
    ]
    finished = [
        e.sequence
        for e in events
        if e.type == "node.succeeded" and e.node_id.endswith(".compensate")
    ]
    assert max(started) < min(finished)  # all three were running at once


async def test_failed_compensation_ends_compensation_failed_with_lists(harness, ledger) -> None:
    final, nodes = await harness.run(saga("reverse", refund_hotel_fails=True))
    assert final.state is ExecutionState.COMPENSATION_FAILED
    assert final.error["details"]["compensated"] == ["car", "flight"]
    assert final.error["details"]["not_compensated"] == ["hotel"]
    assert nodes["hotel"].state is NodeState.COMPENSATION_FAILED


async def test_compensation_is_retried_by_its_own_policy(harness, ledger) -> None:
    final, nodes = await harness.run(
        """
name: r
error_handlers:
  - {match: {nodes: boom}, action: compensate}
nodes:
  - id: a
    tool: {name: book, args: {what: a}}
    compensate:
      retry: {max_attempts: 3, initial_interval: 1ms}
      tool: {name: core.fail, args: {succeed_on_attempt: 3}}
  - {id: boom, needs: [a], tool: {name: core.fail}}
"""
    )
    assert final.state is ExecutionState.COMPENSATED
    assert nodes["a.compensate"].attempt == 3


async def test_cancel_with_compensation(harness, ledger) -> None:
    ex = await harness.start(
        """
name: c
nodes:
  - id: a
    tool: {name: book, args: {what: a}}
    compensate: {tool: {name: undo, args: {what: "${{ output.id }}"}}}
  - {id: slow, needs: [a], tool: {name: core.sleep, args: {seconds: 5}}}
"""
    )
    await eventually(lambda: ("book", "a", f"{ex.id}/a") in ledger)

    async def a_committed() -> bool:
        return any(
            n.node_id == "a" and n.state.value == "SUCCEEDED"
            for n in await harness.engine.get_nodes(ex.id)
        )

    await eventually(a_committed)  # `slow` runs: cancelling now must undo a
    await harness.engine.cancel(ex.id, compensate=True)
    final = await harness.engine.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.COMPENSATED
    assert final.error["type"] == "cancelled"
    assert ("undo", "a-1", f"{ex.id}/a/compensate") in ledger


async def test_restart_during_compensation_finishes_without_repeating(ledger) -> None:
    store = MemoryStore()
    slow_undo = Booking("undo", ledger)

    def make() -> Engine:
        return Engine(
            store,
            tools=Registry([*core_tools(), Booking("book", ledger), slow_undo]),
            agents=default_agents(),
            config=EngineConfig(seed=3),
        )

    text = saga("reverse").replace(
        'what: "${{ output.id }}"', 'what: "${{ output.id }}", sleep: 0.05'
    )
    first = make()
    await first.start()
    await first.create_workflow(load_workflow(text))
    ex = await first.start_execution("trip", {})
    await eventually(lambda: any(t == "undo" for t, _, _ in ledger))
    await first.stop(grace=0)
    committed = {
        n.node_id for n in await store.get_nodes(ex.id) if n.state is NodeState.COMPENSATED
    }
    assert (await store.get_execution(ex.id)).state is ExecutionState.COMPENSATING

    second = make()
    await second.start()
    final = await second.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.COMPENSATED
    undone = [w for t, w, _ in ledger if t == "undo"]
    for node in committed:
        assert undone.count(f"{node}-1") == 1
    assert set(undone) == {"car-1", "hotel-1", "flight-1"}
    # Reverse order holds across the restart (first occurrences).
    firsts = sorted(set(undone), key=undone.index)
    assert firsts == ["car-1", "hotel-1", "flight-1"]
