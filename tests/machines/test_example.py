"""examples/order_state_machine.yaml runs as its header says."""

from __future__ import annotations

import re
from pathlib import Path

from agentrun.storage.machines import InstanceState

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_state_machine.yaml"


def _fulfil() -> str:
    """The workflow the header creates first: examples/fulfil_workflow.yaml."""
    header = [line for line in EXAMPLE.read_text().splitlines() if line.startswith("#")]
    created = [re.search(r"workflows create (\S+)", line) for line in header]
    paths = [m.group(1) for m in created if m]
    assert paths[:2] == ["examples/fulfil_workflow.yaml", "examples/order_state_machine.yaml"]
    return (EXAMPLE.parents[1] / paths[0]).read_text()


async def test_order_example_from_payment_to_shipping(h) -> None:
    await h.define(_fulfil(), EXAMPLE.read_text())
    order = await h.machines.create_instance(
        "order", {"id": "o-17", "total": 30, "email": "ann@example.com"}
    )
    timers = await h.machines.store.list_timers()
    assert [round(t.fire_at - order.created_at) for t in timers] == [1800]
    rec, entry = await h.machines.send_event(order.id, "PAY", {"amount": 10}, event_id="pay-1")
    assert (rec.current, rec.data["attempts"], entry.transition_index) == ("pending", 1, 1)
    rec, entry = await h.machines.send_event(order.id, "PAY", {"amount": 30}, event_id="pay-2")
    assert rec.current == "paid" and [a["phase"] for a in entry.actions] == ["transition", "entry"]
    assert await h.machines.store.list_timers() == []
    final = await h.machines.wait_final(order.id, timeout=10)
    assert (final.state, final.current, final.data["tracking"]) == (
        InstanceState.COMPLETED,
        "shipped",
        "TRK-o-17",
    )


async def test_order_example_cancelled(h) -> None:
    await h.define(_fulfil(), EXAMPLE.read_text())
    order = await h.machines.create_instance("order", {"id": "o-18", "total": 30})
    rec, _ = await h.machines.send_event(order.id, "CANCEL")
    assert (rec.state, rec.current) == (InstanceState.COMPLETED, "cancelled")
