"""The DAG fold driven directly, without asyncio: a message in, the journal's writes and
the effects out. These pin the interpreter's rules apart from the loop that runs them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentrun.engine import compile_workflow, load_workflow
from agentrun.engine.dag.fold import Fold
from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import ArmTimer, Call, Done, RetryDue
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.records import ExecutionRecord, ExecutionState, NodeState

# `asyncio` must not be needed: no test here is a coroutine and none runs a loop.
pytestmark = pytest.mark.filterwarnings("error")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def fold_of(yaml_text: str, clock: Clock | None = None, input: Any = None) -> Fold:
    plan = compile_workflow(
        load_workflow(yaml_text), tools=Registry(core_tools()), agents=default_agents()
    )
    record = ExecutionRecord(
        id="ex1",
        tenant="default",
        workflow=plan.name,
        version=1,
        state=ExecutionState.PENDING,
        input={"n": 1} if input is None else input,
        created_at=0.0,
        last_sequence=1,
    )
    return Fold(plan, record, clock=clock or Clock(), rng=random.Random(7))


def states(fold: Fold) -> dict[str, NodeState]:
    return {nid: rec.state for nid, rec in fold.records.items()}


def events(fold: Fold) -> list[tuple[str, str | None]]:
    batch = fold.journal.take()
    return [(e.type, e.node_id) for e in batch.events] if batch is not None else []


def launched(fold: Fold) -> list[tuple[str, int]]:
    return [(str(c.key), c.attempt) for c in fold.take_launches()]


CHAIN = """
name: chain
nodes:
  - {id: a, tool: {name: core.echo, args: {v: 1}}}
  - {id: b, needs: [a], tool: {name: core.echo, args: {v: "${{ nodes.a.output.v }}"}}}
"""


def test_a_completion_unlocks_its_successor_only_after_it_is_journaled() -> None:
    fold = fold_of(CHAIN)
    fold.start_fresh()
    fold.turn()
    assert states(fold) == {"a": NodeState.RUNNING}
    assert launched(fold) == [("a", 1)]
    assert events(fold) == [("execution.running", None), ("node.ready", "a"), ("node.running", "a")]

    fold.apply(Done(TaskKey("a"), 1, True, {"v": 1}))
    assert states(fold) == {"a": NodeState.SUCCEEDED, "b": NodeState.READY}
    assert fold.to_launch == []  # b starts in the turn, never inside the message
    fold.turn()
    assert launched(fold) == [("b", 1)]
    assert events(fold) == [("node.succeeded", "a"), ("node.ready", "b"), ("node.running", "b")]

    fold.apply(Done(TaskKey("b"), 1, True, {"v": 1}))
    fold.turn()
    assert fold.finished and fold.record.state is ExecutionState.SUCCEEDED
    assert fold.record.output == {"b": {"v": 1}}
    assert events(fold)[-1] == ("execution.succeeded", None)
    assert fold.take_effects() == []  # no timer, slot or cancel was ever needed


def test_a_late_answer_from_an_old_attempt_changes_nothing() -> None:
    fold = fold_of(CHAIN)
    fold.start_fresh()
    fold.turn()
    fold.take_launches()
    events(fold)
    fold.apply(Done(TaskKey("a"), 7, True, {"v": 1}))
    assert states(fold) == {"a": NodeState.RUNNING}
    assert events(fold) == []


def test_a_failure_with_retries_left_arms_a_timer_then_runs_a_second_attempt() -> None:
    clock = Clock()
    fold = fold_of(
        """
name: retried
nodes:
  - id: a
    retry: {max_attempts: 3, backoff: fixed, initial_interval: 2s, jitter: none}
    tool: {name: core.fail, args: {succeed_on_attempt: 2}}
""",
        clock,
    )
    fold.start_fresh()
    fold.turn()
    assert launched(fold) == [("a", 1)]
    events(fold)

    fold.apply(Done(TaskKey("a"), 1, False, {"type": "tool_error", "message": "boom"}))
    rec = fold.records["a"]
    assert rec.state is NodeState.RETRYING and rec.wake_at == clock.now + 2.0
    assert fold.take_effects() == [ArmTimer(TaskKey("a"), 2.0, RetryDue(TaskKey("a")))]
    fold.turn()
    assert fold.record.state is ExecutionState.RUNNING  # a retry pending is not waiting
    assert [e for e in events(fold)] == [("node.retrying", "a")]

    clock.now += 2.0
    fold.apply(RetryDue(TaskKey("a")))
    assert rec.state is NodeState.READY
    fold.turn()
    assert launched(fold) == [("a", 2)]
    fold.apply(Done(TaskKey("a"), 2, True, "ok"))
    fold.turn()
    assert fold.record.state is ExecutionState.SUCCEEDED
    assert rec.attempt == 2 and rec.error is None


def test_a_failure_without_retries_fails_the_execution_naming_the_node() -> None:
    fold = fold_of(CHAIN)
    fold.start_fresh()
    fold.turn()
    fold.take_launches()
    fold.apply(Done(TaskKey("a"), 1, False, {"type": "tool_error", "message": "boom"}))
    assert fold.finished and fold.record.state is ExecutionState.FAILED
    assert fold.record.error is not None and fold.record.error["node"] == "a"
    assert "b" not in fold.records  # never reached


def test_a_skip_propagates_down_a_dead_path_and_a_join_any_still_runs() -> None:
    fold = fold_of(
        """
name: dead
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, needs: [a], when: "input.n > 5", pass: {value: 2}}
  - {id: c, needs: [b], pass: {value: 3}}
  - {id: d, needs: [c], pass: {value: 4}}
  - {id: e, needs: [a, d], join: any, pass: {value: 5}}
"""
    )
    fold.start_fresh()
    fold.turn()  # every node is inline: the whole run is one turn
    assert {nid: (r.state, r.skip_reason) for nid, r in fold.records.items()} == {
        "a": (NodeState.SUCCEEDED, None),
        "b": (NodeState.SKIPPED, "when"),
        "c": (NodeState.SKIPPED, "dead_path"),
        "d": (NodeState.SKIPPED, "dead_path"),
        "e": (NodeState.SUCCEEDED, None),
    }
    assert fold.record.state is ExecutionState.SUCCEEDED
    assert fold.to_launch == [] and fold.take_effects() == []


def test_map_items_are_launched_under_their_stored_keys_and_gathered_in_order() -> None:
    fold = fold_of(
        """
name: mapped
nodes:
  - id: m
    map: {items: "${{ input.xs }}", node: {tool: {name: core.echo, args: {i: "${{ item }}"}}}}
""",
        input={"xs": [1, 2]},
    )
    fold.start_fresh()
    fold.turn()
    calls: list[Call] = fold.take_launches()
    assert [(c.key, c.extra) for c in calls] == [
        (TaskKey("m", 0), {"item": 1, "index": 0}),
        (TaskKey("m", 1), {"item": 2, "index": 1}),
    ]
    assert [str(c.key) for c in calls] == ["m[0]", "m[1]"]
    assert sorted(r.node_id for r in fold.items.values()) == ["m[0]", "m[1]"]
    fold.apply(Done(TaskKey("m", 1), 1, True, "two"))
    fold.apply(Done(TaskKey("m", 0), 1, True, "one"))
    assert fold.records["m"].output == ["one", "two"]
    assert fold.record.state is ExecutionState.RUNNING  # settled by the next turn
    fold.turn()
    assert fold.record.state is ExecutionState.SUCCEEDED


@pytest.mark.parametrize(
    ("key", "text", "idempotency"),
    [
        (TaskKey("a"), "a", "ex/a"),
        (TaskKey("a", 3), "a[3]", "ex/a/3"),
        (TaskKey("a", role=Role.FALLBACK), "a.fallback", "ex/a"),
        (TaskKey("a", role=Role.COMPENSATE), "a.compensate", "ex/a/compensate"),
    ],
)
def test_a_task_key_keeps_its_stored_forms(key: TaskKey, text: str, idempotency: Any) -> None:
    assert str(key) == text
    assert TaskKey.parse(text) == key
    assert key.idempotency_key("ex") == idempotency


def test_each_outgoing_edge_sees_the_names_its_own_expressions_read() -> None:
    # The edges of a node share one activation: it must hold what every one of them reads,
    # not only what the first one with an expression does.
    fold = fold_of(
        """
name: edges
nodes:
  - {id: a, pass: {value: {ok: true}}}
  - {id: b, pass: {value: 2}}
  - {id: c, pass: {value: 3}}
edges:
  - {from: a, to: b, when: "output.ok"}
  - {from: a, to: c, when: "input.n == 1", input: {seen: "${{ vars }}"}}
""",
        input={"n": 1},
    )
    fold.start_fresh()
    fold.turn()
    assert {nid: r.state for nid, r in fold.records.items()} == {
        "a": NodeState.SUCCEEDED,
        "b": NodeState.SUCCEEDED,
        "c": NodeState.SUCCEEDED,
    }
    assert fold.records["c"].input == {"seen": {}}
