"""Data size limits in state machines (issue 13, item 2): an action's output and the instance's
data after an `assign` are measured before they are stored; an event's data and an instance's
input are refused over their limits."""

from __future__ import annotations

import pytest

from agentrun.engine import InvalidInput
from tests.machines.conftest import Harness

GROW = """
name: grow
mode: state_machine
initial: idle
states:
  idle:
    on:
      ECHO: {target: idle, actions: [{tool: {name: core.echo, args: {s: "${{ event.data.s + event.data.s }}"}}}]}
      KEEP_A: {target: idle, assign: {a: "${{ event.data.s }}"}}
      KEEP_B: {target: idle, assign: {b: "${{ event.data.s }}"}}
"""


async def test_oversize_action_output_and_data_fail_the_instance(h: Harness) -> None:
    await h.define(GROW)
    s = "s" * 600_000
    inst = await h.machines.create_instance("grow")
    after, entry = await h.machines.send_event(inst.id, "ECHO", {"s": s})
    assert after.state.value == "FAILED"
    assert after.error["type"] == "output_too_large", after.error
    assert s + s not in repr(entry)  # the event data is stored; the doubled output is not

    keep = await h.machines.create_instance("grow")
    await h.machines.send_event(keep.id, "KEEP_A", {"s": s})
    after, _ = await h.machines.send_event(keep.id, "KEEP_B", {"s": s})
    assert after.state.value == "FAILED"
    assert "instance's data" in after.error["message"]
    assert set(after.data) == {"a"}


async def test_oversize_event_data_and_input_are_refused(h: Harness) -> None:
    await h.define(GROW)
    big = "b" * (1024 * 1024 + 1)
    with pytest.raises(InvalidInput, match="data_limits.input_bytes"):
        await h.machines.create_instance("grow", {"s": big})
    inst = await h.machines.create_instance("grow")
    with pytest.raises(InvalidInput, match="data_limits.signal_bytes"):
        await h.machines.send_event(inst.id, "KEEP_A", {"s": big})
