"""Property: for random machines and random event sequences, replaying the stored history
from the initial state (re-evaluating every guard and assign) reproduces the instance's
current state and data. Also: the fast path of guards decides exactly as CEL does."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentrun.engine import InvalidWorkflow, load_workflow
from agentrun.engine.expressions import ExpressionError, compile_bool
from agentrun.engine.machine import EventNotAccepted
from agentrun.engine.machine.fastcel import Fallback, compile_fast
from agentrun.engine.machine.runtime import replay
from agentrun.storage.memory import MemoryStore
from tests.machines.conftest import close, make

EVENTS = ["E0", "E1", "E2"]
GUARDS = [
    "${{ data.x < %d }}",
    "${{ event.data.v > %d }}",
    "${{ data.x + event.data.v >= %d && state != 'zz' }}",
    "${{ !(data.y == %d) || event.data.v == 1 }}",
]
ASSIGNS = [
    {"x": "${{ data.x + event.data.v }}"},
    {"y": "${{ data.y * 2 + 1 }}"},
    {"x": "${{ data.x - 1 }}", "y": "${{ event.data.v }}"},
    {},
]


@st.composite
def machines(draw: Any) -> str:
    n = draw(st.integers(2, 4))
    lines = ["name: rnd", "mode: state_machine", "initial: s0", "data: {x: 0, y: 0}", "states:"]
    for s in range(n):
        lines.append(f"  s{s}:")
        lines.append("    on:")
        events = draw(st.lists(st.sampled_from(EVENTS), min_size=1, max_size=3, unique=True))
        for event in events:
            lines.append(f"      {event}:")
            count = draw(st.integers(1, 3))
            for k in range(count):
                target = draw(st.integers(0, n - 1))
                item = f"        - target: s{target}"
                lines.append(item)
                if k < count - 1 or draw(st.booleans()):
                    guard = draw(st.sampled_from(GUARDS)) % draw(st.integers(-3, 6))
                    lines.append(f'          guard: "{guard}"')
                assign = draw(st.sampled_from(ASSIGNS))
                if assign:
                    body = ", ".join(f'{key}: "{value}"' for key, value in assign.items())
                    lines.append(f"          assign: {{{body}}}")
                if target == s and draw(st.booleans()):
                    lines.append("          reenter: true")
    return "\n".join(lines) + "\n"


sequences = st.lists(
    st.tuples(st.sampled_from(EVENTS), st.integers(-2, 5)), min_size=1, max_size=25
)


@pytest.mark.timeout(180)  # 31 s of a loaded machine
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=machines(), events=sequences)
def test_replaying_the_history_reproduces_state_and_data(
    text: str, events: list[tuple[str, int]]
) -> None:
    try:
        spec = load_workflow(text)
        from agentrun.engine import compile_workflow
        from agentrun.integrations import default_agents, default_tools

        plan = compile_workflow(spec, tools=default_tools(), agents=default_agents())
    except InvalidWorkflow:
        assume(False)
        return

    async def run() -> None:
        h = await make(MemoryStore())
        try:
            await h.engine.create_workflow(spec)
            instance = await h.machines.create_instance("rnd", {"k": 1})
            for n, (event, v) in enumerate(events):
                try:
                    await h.machines.send_event(instance.id, event, {"v": v}, event_id=f"e{n}")
                except EventNotAccepted:
                    pass
            current = await h.machines.get_instance(instance.id)
            history = await h.machines.list_history(instance.id)
            assert len(history) == len(events) + 1
            assert replay(plan, current.input, history) == (current.current, current.data)
        finally:
            await close(h)

    asyncio.run(run())


NAMES = frozenset({"data", "event", "state", "input"})
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)
FAST_EXPRESSIONS = [
    "data.a < data.b",
    "data.a == data.b",
    "data.a != data.b",
    "data.a >= 3",
    "!(data.a > data.b)",
    "data.a + data.b > 0",
    "data.a * 2 == data.b",
    "data.a - data.b <= -1",
    "data.a && data.b",
    "data.a || data.b",
    "data.missing == 1 || data.a == data.a",
    "event.data.v == 'x'",
    "-data.a < 0",
    "data.a == null",
    "data['a'] == data.b",
    "state == 's0' && data.a > 1.5",
]


@settings(max_examples=300, deadline=None)
@given(source=st.sampled_from(FAST_EXPRESSIONS), a=scalars, b=scalars)
def test_the_fast_path_decides_exactly_as_cel(source: str, a: Any, b: Any) -> None:
    act = {
        "data": {"a": a, "b": b},
        "event": {"name": "E", "id": None, "data": {"v": a}},
        "state": "s0",
        "input": {},
    }
    fast = compile_fast(source, NAMES)
    assert fast is not None, source
    slow = compile_bool(source, "guard", NAMES)
    try:
        expected: Any = slow.evaluate(act)
    except ExpressionError:
        expected = ExpressionError
    try:
        got: Any = fast(act)
    except Fallback:
        return  # decided by CEL itself
    nan = (
        isinstance(got, float)
        and math.isnan(got)
        and isinstance(expected, float)
        and math.isnan(expected)
    )
    assert got == expected or nan, (source, a, b, got, expected)
    assert type(got) is type(expected)
