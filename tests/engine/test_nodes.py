"""Each node kind, run through the real engine."""

from __future__ import annotations

import sys

import pytest

from agentrun.storage.records import ExecutionState, NodeState


def test_engine_does_not_load_grpc() -> None:
    """The engine is plain asyncio: importing and running it never loads grpc."""
    import subprocess

    code = (
        "import asyncio, sys\n"
        "from agentrun.engine import Engine, load_workflow\n"
        "from agentrun.integrations import default_tools, default_agents\n"
        "from agentrun.storage.memory import MemoryStore\n"
        "async def main():\n"
        "    e = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())\n"
        "    await e.create_workflow(load_workflow('name: g\\nnodes:\\n  - {id: a, pass: {value: 1}}\\n'))\n"
        "    x = await e.start_execution('g', {})\n"
        "    print((await e.wait(x.id)).state.value, 'grpc' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SUCCEEDED", "False"]


async def test_pass_values_and_expressions(harness) -> None:
    final, nodes = await harness.run(
        """
name: p
input_schema: {type: object, properties: {n: {type: integer}}}
nodes:
  - id: a
    pass: {value: {x: 1, s: "${{ input.n + 1 }}", t: "n=${{ input.n }}"}}
  - id: b
    needs: [a]
    pass: {value: "${{ nodes.a.output.s * 2 }}"}
""",
        {"n": 4},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["a"].output == {"x": 1, "s": 5, "t": "n=4"}
    assert final.output == {"b": 10}


async def test_tool_node_echo_and_args_validation(harness) -> None:
    final, nodes = await harness.run(
        """
name: t
nodes:
  - id: echo
    tool: {name: core.echo, args: {msg: "${{ input.m }}", n: [1, 2]}}
  - id: sleep
    needs: [echo]
    tool: {name: core.sleep, args: {seconds: "${{ input.bad }}"}}
""",
        {"m": "hi", "bad": "soon"},
    )
    assert nodes["echo"].output == {"msg": "hi", "n": [1, 2]}
    assert final.state is ExecutionState.FAILED
    assert nodes["sleep"].state is NodeState.FAILED
    assert nodes["sleep"].error["type"] == "invalid_args"
    assert "args.seconds" in nodes["sleep"].error["message"]
    assert final.error["node"] == "sleep"


@pytest.fixture
def mock_responses():
    return {
        "classifier": [{"category": "order"}, {"category": "billing"}],
        "writer": "Dear customer",
    }


async def test_agent_node_mock_echo_and_configured(harness) -> None:
    final, nodes = await harness.run(
        """
name: a
nodes:
  - id: echo
    agent: {model: mock/echo, prompt: "Classify: ${{ input.msg }}"}
  - id: cls
    agent:
      model: mock/classifier
      prompt: x
      output_schema: {type: object, required: [category], properties: {category: {enum: [order, billing]}}}
  - id: write
    needs: [cls]
    agent: {model: mock/writer, prompt: "about ${{ nodes.cls.output.category }}"}
""",
        {"msg": "where is my parcel"},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["echo"].output == {"text": "Classify: where is my parcel"}
    assert nodes["cls"].output == {"category": "order"}
    assert nodes["write"].output == {"text": "Dear customer"}


async def test_agent_output_schema_mismatch_is_invalid_output(harness) -> None:
    final, nodes = await harness.run(
        """
name: a
nodes:
  - id: w
    agent: {model: mock/writer, prompt: x, output_schema: {type: object, required: [text, score]}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["w"].error["type"] == "invalid_output"


async def test_map_keeps_input_order_and_bounds_concurrency(harness) -> None:
    final, nodes = await harness.run(
        """
name: m
nodes:
  - id: m
    map:
      items: "${{ input.xs }}"
      max_concurrency: 2
      node: {tool: {name: core.sleep, args: {seconds: "${{ double(item) / 100.0 }}"}}}
    output: "${{ output.map(r, r.slept) }}"
""",
        {"xs": [5, 1, 3, 0]},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["m"].output == [0.05, 0.01, 0.03, 0.0]
    events = await harness.events(final.id)
    running = 0
    peak = 0
    for e in events:
        if e.node_id and e.node_id.startswith("m["):
            if e.type == "node.running":
                running += 1
                peak = max(peak, running)
            elif e.type in ("node.succeeded", "node.failed", "node.retrying"):
                running -= 1
    assert peak == 2


async def test_map_empty_list_gives_empty_output(harness) -> None:
    final, nodes = await harness.run(
        """
name: m
nodes:
  - id: m
    map: {items: "${{ input.xs }}", node: {tool: {name: core.echo}}}
""",
        {"xs": []},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["m"].output == []


async def test_map_item_failure_fails_node_and_cancels_others(harness) -> None:
    final, nodes = await harness.run(
        """
name: m
nodes:
  - id: m
    map:
      items: "${{ input.xs }}"
      node: {tool: {name: core.fail, args: {type: "${{ item == 1 ? 'boom' : 'ok' }}", succeed_on_attempt: "${{ item == 1 ? 99 : 1 }}"}}}
""",
        {"xs": [0, 1, 2]},
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["m"].state is NodeState.FAILED
    assert nodes["m"].error["type"] == "boom"
    assert nodes["m"].error["details"]["index"] == 1


async def test_map_items_retry_one_by_one(harness) -> None:
    final, nodes = await harness.run(
        """
name: m
nodes:
  - id: m
    retry: {max_attempts: 3, backoff: fixed, initial_interval: 1ms}
    map:
      items: "${{ input.xs }}"
      node: {tool: {name: core.fail, args: {succeed_on_attempt: "${{ item }}"}}}
""",
        {"xs": [1, 3, 2]},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert [r["attempt"] for r in nodes["m"].output] == [1, 3, 2]
    assert [nodes[f"m[{i}]"].attempt for i in range(3)] == [1, 3, 2]


async def test_switch_takes_only_the_chosen_edge(harness) -> None:
    text = """
name: s
nodes:
  - id: route
    switch:
      cases:
        - {when: "${{ input.kind == 'a' }}", goto: on_a}
        - {when: "${{ input.kind == 'b' }}", goto: on_b}
      default: other
  - {id: on_a, pass: {value: a}}
  - {id: on_b, pass: {value: b}}
  - {id: other, pass: {value: o}}
"""
    _, nodes = await harness.run(text, {"kind": "b"})
    assert nodes["route"].output == "on_b"
    assert nodes["on_b"].state is NodeState.SUCCEEDED
    assert nodes["on_a"].state is NodeState.SKIPPED and nodes["on_a"].skip_reason == "dead_path"
    assert nodes["other"].state is NodeState.SKIPPED
    _, nodes = await harness.run(text, {"kind": "zzz"})
    assert nodes["other"].state is NodeState.SUCCEEDED


async def test_switch_without_match_or_default_fails(harness) -> None:
    final, nodes = await harness.run(
        """
name: s
nodes:
  - id: route
    switch: {cases: [{when: "${{ false }}", goto: x}]}
  - {id: x, pass: {}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["route"].error["type"] == "no_choice_matched"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("merge", {"a": {"x": 1, "y": 2}, "b": 3}),
        ("first", {"a": {"x": 1}}),
    ],
)
async def test_aggregate_merge_and_first(harness, strategy, expected) -> None:
    final, nodes = await harness.run(
        f"""
name: agg
nodes:
  - {{id: one, pass: {{value: {{a: {{x: 1}}}}}}}}
  - {{id: two, pass: {{value: {{a: {{y: 2}}, b: 3}}}}}}
  - {{id: skipped, when: "${{{{ false }}}}", pass: {{value: {{z: 9}}}}}}
  - id: agg
    needs: [one, skipped, two]
    aggregate: {{strategy: {strategy}}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["agg"].output == expected


async def test_aggregate_concat_vote_expr(harness) -> None:
    _final, nodes = await harness.run(
        """
name: agg
nodes:
  - {id: a, pass: {value: [1, 2]}}
  - {id: b, pass: {value: [3]}}
  - {id: cat, needs: [a, b], aggregate: {strategy: concat}}
  - {id: v1, pass: {value: yes}}
  - {id: v2, pass: {value: no}}
  - {id: v3, pass: {value: no}}
  - {id: v4, pass: {value: yes}}
  - {id: vote, needs: [v1, v2, v3, v4], aggregate: {strategy: vote}}
  - {id: sum, needs: [a, b], aggregate: {strategy: expr, expr: "${{ size(outputs) }}"}}
"""
    )
    assert nodes["cat"].output == [1, 2, 3]
    assert nodes["vote"].output == "yes"  # a tie goes to the earliest
    assert nodes["sum"].output == 2


async def test_wait_for_signal_buffered_before_the_wait(harness) -> None:
    final, nodes = await harness.run(
        """
name: w
nodes:
  - id: slow
    tool: {name: core.sleep, args: {seconds: 0.05}}
  - id: approve
    needs: [slow]
    wait: {signal: approval}
  - id: after
    needs: [approve]
    pass: {value: "${{ nodes.approve.output.ok }}"}
""",
        signals={"approval": {"ok": True}},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["approve"].output == {"ok": True}
    assert nodes["after"].output is True


async def test_wait_for_signal_delivered_while_waiting(harness) -> None:
    from tests.engine.conftest import eventually

    ex = await harness.start(
        """
name: w
nodes:
  - {id: approve, wait: {signal: approval}}
"""
    )

    async def waiting():
        return (await harness.engine.get_execution(ex.id)).state is ExecutionState.WAITING

    await eventually(waiting)
    await harness.engine.signal(ex.id, "approval", {"by": "ann"})
    final = await harness.engine.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"approve": {"by": "ann"}}
    types = [e.type for e in await harness.events(ex.id)]
    assert "signal.received" in types and "execution.waiting" in types


async def test_wait_timeout_fails_with_timeout(harness) -> None:
    final, nodes = await harness.run(
        """
name: w
nodes:
  - {id: approve, wait: {signal: approval, timeout: 50ms}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["approve"].error["type"] == "timeout"


async def test_wait_duration_and_until(harness) -> None:
    final, nodes = await harness.run(
        """
name: w
nodes:
  - {id: nap, wait: {duration: 30ms}}
  - {id: at, wait: {until: "${{ string(timestamp(input.now) + duration('40ms')) }}"}}
""",
        {"now": "2000-01-01T00:00:00Z"},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["nap"].ended_at - nodes["nap"].started_at >= 0.03


async def test_workflow_node_runs_a_child_execution(harness) -> None:
    from agentrun.engine import load_workflow

    await harness.engine.create_workflow(
        load_workflow(
            """
name: child
nodes:
  - {id: double, pass: {value: "${{ input.n * 2 }}"}}
output: "${{ nodes.double.output }}"
"""
        )
    )
    final, nodes = await harness.run(
        """
name: parent
nodes:
  - {id: call, workflow: {name: child, input: {n: "${{ input.n }}"}}}
""",
        {"n": 21},
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["call"].output == 42
    child = await harness.engine.get_execution(f"{final.id}.call.1")
    assert child.parent_id == final.id and child.state is ExecutionState.SUCCEEDED


async def test_failing_child_fails_the_workflow_node(harness) -> None:
    from agentrun.engine import load_workflow

    await harness.engine.create_workflow(
        load_workflow(
            "name: bad-child\nnodes:\n  - {id: f, tool: {name: core.fail, args: {type: oops}}}\n"
        )
    )
    final, nodes = await harness.run(
        "name: p\nnodes:\n  - {id: call, workflow: {name: bad-child}}\n"
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["call"].error["type"] == "oops"
