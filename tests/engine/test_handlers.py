"""Workflow error handlers: first match wins; retry replaces the node's policy for what it
matches; skip, fallback, compensate and escalate fire once the retries that apply are spent."""

from __future__ import annotations

import pytest

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.storage.records import ExecutionState, NodeState
from tests.engine.conftest import eventually


async def test_retry_handler_replaces_the_node_policy_for_matched_errors(harness) -> None:
    final, nodes = await harness.run(
        """
name: h
error_handlers:
  - match: {nodes: "lookup_.*", errors: [timeout, tool_error]}
    action: retry
    retry: {max_attempts: 4, backoff: fixed, initial_interval: 1ms}
nodes:
  - id: lookup_order
    retry: {max_attempts: 1}
    tool: {name: core.fail, args: {type: tool_error, succeed_on_attempt: 4}}
  - id: other
    needs: [lookup_order]
    retry: {max_attempts: 1}
    tool: {name: core.fail, args: {type: tool_error, succeed_on_attempt: 2}}
"""
    )
    assert nodes["lookup_order"].attempt == 4
    assert nodes["lookup_order"].state is NodeState.SUCCEEDED
    # `other` does not match the regex (which must match the whole id): its own policy holds.
    assert nodes["other"].state is NodeState.FAILED and nodes["other"].attempt == 1
    assert final.state is ExecutionState.FAILED


async def test_skip_handler_after_retries_decides_edges_as_success(harness) -> None:
    final, nodes = await harness.run(
        """
name: h
error_handlers:
  - match: {nodes: enrich}
    action: skip
    output: {enriched: false}
nodes:
  - id: enrich
    retry: {max_attempts: 2, initial_interval: 1ms}
    tool: {name: core.fail, args: {type: tool_error}}
  - id: next
    needs: [enrich]
    pass: {value: "${{ nodes.enrich.output.enriched }}"}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["enrich"].attempt == 2  # the node's own retries came first
    assert nodes["enrich"].state is NodeState.SKIPPED
    assert nodes["enrich"].skip_reason == "handler"
    assert nodes["next"].output is False


async def test_first_matching_handler_wins(harness) -> None:
    _final, nodes = await harness.run(
        """
name: h
error_handlers:
  - match: {errors: ["pay*"]}
    action: skip
    output: first
  - match: {errors: ["*"]}
    action: skip
    output: second
nodes:
  - {id: a, tool: {name: core.fail, args: {type: payments.declined}}}
  - {id: b, tool: {name: core.fail, args: {type: tool_error}}}
"""
    )
    assert nodes["a"].output == "first"
    assert nodes["b"].output == "second"


async def test_star_does_not_match_cancelled(harness) -> None:
    from agentrun.engine.plan import HandlerPlan

    h = HandlerPlan(index=0, path="", node_pattern=None, errors=("*",), action="skip")
    assert h.matches("a", "tool_error") and not h.matches("a", "cancelled")


async def test_fallback_runs_in_place_and_its_failure_fails_the_node(harness) -> None:
    final, nodes = await harness.run(
        """
name: h
error_handlers:
  - match: {nodes: classify}
    action: fallback
    fallback: {pass: {value: {category: other}}}
nodes:
  - id: classify
    tool: {name: core.fail, args: {type: agent_error}}
    output: "${{ output.category }}"
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["classify"].output == "other"  # the node's output transform applies
    assert nodes["classify.fallback"].state is NodeState.SUCCEEDED

    final, nodes = await harness.run(
        """
name: h2
error_handlers:
  - match: {nodes: classify}
    action: fallback
    fallback: {tool: {name: core.fail, args: {type: fallback_broke}}}
  - match: {errors: ["*"]}
    action: skip
nodes:
  - id: classify
    tool: {name: core.fail, args: {type: agent_error}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["classify"].state is NodeState.FAILED
    assert nodes["classify"].error["type"] == "fallback_broke"


class Irreversible(Tool):
    name = "test.launch"
    effect = Effect.IRREVERSIBLE

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, args, ctx: CallContext):
        self.calls += 1
        raise ToolFailure("tool_error", "launch failed")


@pytest.fixture
def irreversible() -> Irreversible:
    return Irreversible()


@pytest.fixture
def extra_tools(irreversible):
    return [irreversible]


async def test_irreversible_tool_is_never_retried_but_handlers_apply(harness, irreversible) -> None:
    final, nodes = await harness.run(
        """
name: h
error_handlers:
  - match: {nodes: launch}
    action: retry
    retry: {max_attempts: 5, initial_interval: 1ms}
  - match: {nodes: launch}
    action: skip
nodes:
  - id: launch
    retry: {max_attempts: 5, initial_interval: 1ms}
    tool: {name: test.launch}
"""
    )
    assert irreversible.calls == 1
    assert nodes["launch"].state is NodeState.FAILED
    assert final.state is ExecutionState.FAILED


@pytest.mark.parametrize("where", ["body", "node"])
async def test_irreversible_map_body_is_called_once_per_item(harness, irreversible, where) -> None:
    """Issue 14: an irreversible tool as a map body kept its `retry` (3 calls), whereas the
    same tool as a node of its own is called once; one retry decision guards both."""
    retry = "retry: {max_attempts: 3, initial_interval: 1ms}"
    final, nodes = await harness.run(
        f"""
name: h
nodes:
  - id: launch
    {retry if where == "node" else ""}
    map:
      items: "${{{{ [1] }}}}"
      node: {{tool: {{name: test.launch}}{", " + retry if where == "body" else ""}}}
"""
    )
    assert irreversible.calls == 1
    assert nodes["launch"].state is NodeState.FAILED
    assert final.state is ExecutionState.FAILED


ESCALATE = """
name: esc
error_handlers:
  - match: {nodes: risky}
    action: escalate
nodes:
  - id: risky
    tool: {name: core.fail, args: {type: tool_error, succeed_on_attempt: 2}}
  - {id: after, needs: [risky], pass: {value: "${{ nodes.risky.output }}"}}
"""


async def _escalated(harness, ex_id):
    async def check():
        return (await harness.engine.get_execution(ex_id)).state is ExecutionState.ESCALATED

    await eventually(check)


@pytest.mark.parametrize(
    ("answer", "state", "after"),
    [
        ({"action": "retry"}, ExecutionState.SUCCEEDED, {"attempt": 2}),
        ({"action": "skip", "output": "manual"}, ExecutionState.SUCCEEDED, "manual"),
        ({"action": "fail"}, ExecutionState.FAILED, None),
    ],
)
async def test_escalation_waits_for_an_answer(harness, answer, state, after) -> None:
    ex = await harness.start(ESCALATE)
    await _escalated(harness, ex.id)
    nodes = {n.node_id: n for n in await harness.engine.get_nodes(ex.id)}
    assert nodes["risky"].state is NodeState.ESCALATED
    await harness.engine.signal(ex.id, "escalation", answer)
    final = await harness.engine.wait(ex.id, timeout=30)
    assert final.state is state
    nodes = {n.node_id: n for n in await harness.engine.get_nodes(ex.id)}
    if after is not None:
        assert nodes["after"].output == after


async def test_escalation_timeout_takes_on_timeout(harness) -> None:
    final, nodes = await harness.run(
        """
name: esc
error_handlers:
  - match: {nodes: risky}
    action: escalate
    timeout: 50ms
    on_timeout: skip
nodes:
  - {id: risky, tool: {name: core.fail}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["risky"].state is NodeState.SKIPPED
    assert nodes["risky"].skip_reason == "handler"


async def test_breaker_opens_fails_fast_half_opens_and_closes(harness) -> None:
    from agentrun.engine.breakers import BreakerState, CircuitBreaker
    from agentrun.engine.plan import BreakerSpec

    b = CircuitBreaker(
        "x", BreakerSpec(failure_threshold=2, window=10, reset_timeout=5, half_open_calls=1)
    )
    assert b.allow(0) == (True, None)
    assert b.record(False, "tool_error", 0) is None
    assert b.record(False, "invalid_args", 0.5) is None  # a caller's mistake does not count
    assert b.record(False, "timeout", 1) is BreakerState.OPEN
    assert b.allow(2) == (False, None)
    assert b.allow(6.5) == (True, BreakerState.HALF_OPEN)
    assert b.allow(6.6) == (False, None)  # only half_open_calls trials
    assert b.record(False, "tool_error", 7) is BreakerState.OPEN
    assert b.allow(12.5) == (True, BreakerState.HALF_OPEN)
    assert b.record(True, None, 13) is BreakerState.CLOSED
    assert b.allow(13) == (True, None)
    # Failures outside the window do not add up.
    b.record(False, "tool_error", 20)
    assert b.record(False, "tool_error", 40) is None


async def test_breaker_in_a_workflow_fails_calls_with_circuit_open(harness) -> None:
    final, nodes = await harness.run(
        """
name: cb
circuit_breakers:
  core.fail: {failure_threshold: 2, window: 60s, reset_timeout: 60s}
error_handlers:
  - {match: {errors: ["*"]}, action: skip}
nodes:
  - {id: a, tool: {name: core.fail}}
  - {id: b, needs: [a], tool: {name: core.fail}}
  - {id: c, needs: [b], tool: {name: core.fail}}
"""
    )
    assert nodes["a"].error["type"] == "tool_error"
    assert nodes["b"].error["type"] == "tool_error"
    assert nodes["c"].error["type"] == "circuit_open"
    events = await harness.events(final.id)
    assert "breaker.open" in [e.type for e in events]
    _final2, nodes2 = await harness.run(
        """
name: cb2
nodes:
  - {id: a, tool: {name: core.fail}}
"""
    )
    assert nodes2["a"].error["type"] == "circuit_open"
