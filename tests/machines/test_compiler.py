"""Validation of state machine specs: every problem at once, each with its field path."""

from __future__ import annotations

import pytest

from agentrun.engine import InvalidWorkflow, compile_workflow, load_workflow
from agentrun.engine.machine.compiler import format_delay
from agentrun.engine.machine.plan import MachinePlan
from agentrun.integrations import default_agents, default_tools

BROKEN = """
name: order
mode: state_machine
initial: pending
nodes: [{id: a, pass: {value: 1}}]
states:
  pending:
    on:
      PAY:
        - target: paid
        - guard: "${{ event.data.amount >= input.total }}"
          target: pending
      CANCEL: {target: cancelld}
      "x:y": pending
      BAD: {target: pending, guard: "${{ nodes.a.output }}"}
      SYNTAX: {target: pending, guard: "${{ data.a >< 2 }}"}
      NUMBER: {target: pending, guard: "${{ 42 }}"}
    after: {30m: {target: expired}}
  paid:
    entry: [{tool: {name: core.nope}}]
    invoke: {workflow: fulfil}
    on_done: {target: shipped}
    on_error: {target: failed}
  stuck: {}
  shipped: {final: true, on: {X: paid}}
  expired: {final: true}
  failed: {final: true}
"""


def _compile(text: str):
    return compile_workflow(load_workflow(text), tools=default_tools(), agents=default_agents())


def test_every_problem_at_once_with_paths() -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        _compile(BROKEN)
    found = {(d.path, d.message.split(";")[0].split(" (")[0]) for d in caught.value.diagnostics}
    paths = {p for p, _ in found}
    assert paths >= {
        "nodes",
        "states.paid.entry[0].tool.name",
        "states.pending.on.BAD[0].guard",
        "states.pending.on.SYNTAX[0].guard",
        "states.pending.on.NUMBER[0].guard",
        "states.pending.on.CANCEL[0].target",
        "states.pending.on.PAY[1]",
        'states.pending.on["x:y"]',
        "states.shipped.on",
        "states.stuck",
    }
    messages = dict(found)
    assert messages["states.pending.on.CANCEL[0].target"] == "unknown state 'cancelld'"
    unreachable = [d for d in caught.value.diagnostics if "unreachable" in d.message]
    assert [d.path for d in unreachable] == ["states.stuck"]
    stuck = [d.message for d in caught.value.diagnostics if d.path == "states.stuck"]
    assert any("needs a way out" in m for m in stuck)


@pytest.mark.parametrize(
    "text, path",
    [
        ("name: m\nmode: state_machine\nstates: {a: {final: true}}\n", "initial"),
        ("name: m\nmode: state_machine\ninitial: b\nstates: {a: {final: true}}\n", "initial"),
        (
            "name: m\nmode: state_machine\ninitial: a\nstates: {a: {on_done: {target: a}, on: {X: a}}}\n",
            "states.a.on_done",
        ),
        (
            "name: m\nmode: state_machine\ninitial: a\nstates: {a: {on: {X: {reenter: true}}}}\n",
            "states.a.on.X[0].reenter",
        ),
        (
            "name: m\nmode: state_machine\ninitial: a\nstates: {a: {on: {X: {target: a, assign: {k: '${{ nodes.x }}'}}}}}\n",
            "states.a.on.X[0].assign.k",
        ),
    ],
)
def test_single_problems(text: str, path: str) -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        _compile(text)
    assert path in [d.path for d in caught.value.diagnostics]


def test_plan_stages_timers_and_quick_transitions() -> None:
    plan = _compile("""
name: door
mode: state_machine
initial: closed
states:
  closed: {on: {OPEN: open}}
  open:
    entry: [{tool: {name: core.echo, args: {x: 1}}}]
    on: {CLOSE: closed, LOCK: {target: locked, guard: "${{ event.data.key == 'k' }}"}}
    after: {90s: closed}
  locked: {final: true}
""")
    assert isinstance(plan, MachinePlan) and plan.initial == "closed"
    assert plan.stages == [["closed"], ["open"], ["locked"]]
    assert plan.states["open"].after[0].event == "after:90s"
    assert plan.states["open"].events == ("CLOSE", "LOCK")
    assert not plan.states["closed"].on["OPEN"][0].quick  # enters `open`, which has entry actions
    assert (
        plan.states["open"].on["LOCK"][0].quick and plan.states["open"].on["LOCK"][0].guard.is_fast
    )


@pytest.mark.parametrize(
    "seconds, text", [(1800, "30m"), (90, "90s"), (0.5, "500ms"), (86400, "1d"), (7200, "2h")]
)
def test_delays_read_as_written(seconds: float, text: str) -> None:
    assert format_delay(seconds) == text


def test_the_state_machine_engine_knows_no_grpc() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agentrun.engine.machine.engine, agentrun.storage.machines; "
        "assert 'grpc' not in sys.modules, sorted(m for m in sys.modules if 'grpc' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
