"""Edge rules: taken / not taken, join, dead-path elimination, node guards, edge inputs."""

from __future__ import annotations

from agentrun.storage.records import ExecutionState, NodeState


async def test_edge_when_decides_taken_and_skips_flow_on(harness) -> None:
    final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: {n: 5}}}
  - {id: big, pass: {value: big}}
  - {id: small, pass: {value: small}}
  - {id: after_small, needs: [small], pass: {value: x}}
edges:
  - {from: a, to: big, when: "${{ output.n > 3 }}"}
  - {from: a, to: small, when: "${{ output.n <= 3 }}"}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["big"].state is NodeState.SUCCEEDED
    assert nodes["small"].state is NodeState.SKIPPED
    assert nodes["small"].skip_reason == "dead_path"
    # The skip flows on: a node whose only predecessor was skipped is skipped too.
    assert nodes["after_small"].state is NodeState.SKIPPED
    assert nodes["after_small"].skip_reason == "dead_path"


async def test_join_any_runs_when_one_edge_is_taken(harness) -> None:
    _final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, when: "${{ false }}", pass: {value: 2}}
  - {id: c, needs: [a, b], pass: {value: 3}}
"""
    )
    assert nodes["b"].skip_reason == "when"
    assert nodes["c"].state is NodeState.SUCCEEDED


async def test_join_all_demands_every_edge_taken(harness) -> None:
    final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, when: "${{ false }}", pass: {value: 2}}
  - {id: c, needs: [a, b], join: all, pass: {value: 3}}
  - {id: d, needs: [a], join: all, pass: {value: 4}}
"""
    )
    assert nodes["c"].state is NodeState.SKIPPED
    assert nodes["c"].skip_reason == "join"
    assert nodes["d"].state is NodeState.SUCCEEDED
    assert final.state is ExecutionState.SUCCEEDED


async def test_node_when_is_checked_just_before_running(harness) -> None:
    _final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: 7}, export: {seen: "${{ output }}"}}
  - {id: b, needs: [a], when: "${{ vars.seen == 7 }}", pass: {value: ran}}
  - {id: c, needs: [a], when: "${{ vars.seen != 7 }}", pass: {value: ran}}
"""
    )
    assert nodes["b"].state is NodeState.SUCCEEDED
    assert nodes["c"].state is NodeState.SKIPPED and nodes["c"].skip_reason == "when"


async def test_when_must_yield_bool(harness) -> None:
    final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, when: "${{ 1 }}", pass: {value: 7}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["a"].error["type"] == "expression_error"
    assert "bool" in nodes["a"].error["message"]


async def test_edge_input_maps_into_the_target(harness) -> None:
    _final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: {q: 2}}}
  - {id: b, pass: {value: {r: 3}}}
  - {id: c, pass: {value: "${{ nodes.c.input.x + nodes.c.input.y }}"}}
edges:
  - {from: a, to: c, input: {x: "${{ output.q }}"}}
  - {from: b, to: c, input: {y: "${{ output.r }}"}}
"""
    )
    assert nodes["c"].input == {"x": 2, "y": 3}
    assert nodes["c"].output == 5


async def test_skipped_ancestor_output_reads_as_null(harness) -> None:
    _final, nodes = await harness.run(
        """
name: e
nodes:
  - {id: a, when: "${{ false }}", pass: {value: 1}}
  - {id: b, pass: {value: 2}}
  - {id: c, needs: [a, b], pass: {value: "${{ nodes.a.output == null && nodes.a.state == 'SKIPPED' }}"}}
"""
    )
    assert nodes["c"].output is True


async def test_runtime_expression_error_is_not_retried(harness) -> None:
    final, nodes = await harness.run(
        """
name: e
nodes:
  - id: a
    retry: {max_attempts: 5, initial_interval: 1ms}
    pass: {value: "${{ input.missing.deeper }}"}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["a"].error["type"] == "expression_error"
    assert nodes["a"].error["details"]["path"] == "nodes[0].pass.value"
    assert nodes["a"].attempt == 1


async def test_output_pipeline_export_and_default_output(harness) -> None:
    final, nodes = await harness.run(
        """
name: e
nodes:
  - id: a
    tool: {name: core.echo, args: {body: {items: [1, 2, 3]}}}
    output: "${{ output.body.items }}"
    export: {count: "${{ size(output) }}"}
  - {id: b, needs: [a], pass: {value: "${{ vars.count }}"}}
  - {id: c, needs: [a], pass: {value: "${{ nodes.a.output[0] }}"}}
  - {id: never, needs: [a], when: "${{ false }}", pass: {value: 0}}
"""
    )
    assert nodes["a"].output == [1, 2, 3]
    assert final.vars == {"count": 3}
    # No workflow `output`: the sinks that succeeded, by id.
    assert final.output == {"b": 3, "c": 1}


async def test_workflow_output_expression(harness) -> None:
    final, _ = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: x}, export: {answer: "${{ output }}"}}
output: "${{ {'answer': vars.answer, 'from': nodes.a.output} }}"
"""
    )
    assert final.output == {"answer": "x", "from": "x"}


async def test_events_have_dense_sequences_and_every_state_change(harness) -> None:
    final, _ = await harness.run(
        """
name: e
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, needs: [a], tool: {name: core.echo, args: {}}}
"""
    )
    events = await harness.events(final.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    per_node = [(e.node_id, e.type) for e in events if e.node_id]
    assert per_node == [
        ("a", "node.ready"),
        ("a", "node.running"),
        ("a", "node.succeeded"),
        ("b", "node.ready"),
        ("b", "node.running"),
        ("b", "node.succeeded"),
    ]
    assert events[0].type == "execution.pending"
    assert events[-1].type == "execution.succeeded"


async def test_priority_orders_ready_nodes(harness) -> None:
    final, _ = await harness.run(
        """
name: e
nodes:
  - {id: low, priority: 1, pass: {value: 1}}
  - {id: high, priority: 9, pass: {value: 1}}
  - {id: mid, priority: 5, pass: {value: 1}}
"""
    )
    events = await harness.events(final.id)
    started = [e.node_id for e in events if e.type == "node.running"]
    assert started == ["high", "mid", "low"]
