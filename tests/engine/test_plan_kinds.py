"""Node plans are one frozen class per kind (`NodePlan` is their union): a node holds its own
kind's fields and no other's, and the word of its kind stays readable for events and output.
A part that does not compile is reported and the node's other fields are still checked."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from agentrun.engine import InvalidWorkflow, compile_workflow, load_workflow
from agentrun.engine.plan import (
    AgentNode,
    AgentStep,
    AggregateNode,
    DagPlan,
    MapNode,
    NodeBase,
    PassNode,
    PassStep,
    StepBase,
    SwitchNode,
    ToolNode,
    ToolStep,
    WaitNode,
    WorkflowNode,
    WorkflowStep,
)
from agentrun.integrations import default_agents, default_tools

WORKFLOW = """
name: kinds
nodes:
  - {id: p, pass: {value: 1}}
  - {id: t, needs: [p], tool: {name: core.echo, args: {x: 1}}}
  - {id: a, needs: [p], agent: {model: mock/echo, prompt: hi}}
  - {id: w, needs: [p], workflow: {name: other}}
  - {id: m, needs: [p], map: {items: "${{ [1, 2] }}", node: {pass: {value: 2}}}}
  - {id: s, needs: [p], switch: {cases: [{when: "true", goto: g}], default: h}}
  - {id: g, wait: {signal: go}}
  - {id: h, wait: {duration: 1s}}
  - {id: agg, needs: [t, a], aggregate: {strategy: concat}}
"""


def _compile(text: str) -> DagPlan:
    plan = compile_workflow(
        load_workflow(textwrap.dedent(text)), tools=default_tools(), agents=default_agents({})
    )
    assert isinstance(plan, DagPlan)
    return plan


def test_each_node_is_the_class_of_its_kind_with_its_fields_only() -> None:
    plan = _compile(WORKFLOW)
    expected = {
        "p": PassNode,
        "t": ToolNode,
        "a": AgentNode,
        "w": WorkflowNode,
        "m": MapNode,
        "s": SwitchNode,
        "g": WaitNode,
        "h": WaitNode,
        "agg": AggregateNode,
    }
    assert {nid: type(node) for nid, node in plan.nodes.items()} == expected
    words = {nid: node.kind for nid, node in plan.nodes.items()}
    assert words == {
        "p": "pass",
        "t": "tool",
        "a": "agent",
        "w": "workflow",
        "m": "map",
        "s": "switch",
        "g": "wait",
        "h": "wait",
        "agg": "aggregate",
    }
    common = {f.name for f in dataclasses.fields(NodeBase)}
    own = {
        nid: {f.name for f in dataclasses.fields(node)} - common for nid, node in plan.nodes.items()
    }
    assert own["p"] == own["a"] == own["w"] == {"step"}
    assert own["t"] == {"step", "irreversible"}
    assert own["m"] == {"items", "body", "max_concurrency"}
    assert own["s"] == {"cases", "default"}
    assert own["g"] == own["h"] == {"signal", "duration", "until", "wait_timeout", "wait_schema"}
    assert own["agg"] == {"strategy", "expr"}
    for node in plan.nodes.values():
        assert not hasattr(node, "__dict__")  # slotted
    # Immutable to the type checker (`plan_class`: mypy refuses `node.priority = 1`), not at
    # run time: a frozen dataclass's __init__ was ~25% of a 10,000-node compile.


def test_a_map_whose_parts_do_not_compile_still_has_its_other_fields_checked() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        _compile("""
        name: broken
        nodes:
          - {id: m, map: {}, output: "${{ nodes.nowhere.output }}"}
        """)
    assert [(d.path, d.message) for d in info.value.diagnostics] == [
        ("nodes[0].map.items", "is required"),
        ("nodes[0].map", "needs exactly one of node or workflow"),
        ("nodes[0]", "unknown node 'nowhere' in an expression"),
    ]


def test_a_node_naming_no_kind_still_has_its_other_fields_checked() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        _compile("""
        name: broken
        nodes:
          - {id: x, output: "${{ nodes.nowhere.output }}"}
        """)
    assert [(d.path, d.message) for d in info.value.diagnostics] == [
        (
            "nodes[0]",
            "needs exactly one kind: agent, tool, map, switch, wait, aggregate, workflow or pass",
        ),
        ("nodes[0]", "unknown node 'nowhere' in an expression"),
    ]


def test_each_step_is_the_class_of_its_kind_with_its_fields_only() -> None:
    plan = _compile(WORKFLOW)
    steps = {
        nid: node.step
        for nid, node in plan.nodes.items()
        if isinstance(node, PassNode | ToolNode | AgentNode | WorkflowNode)
    }
    body = plan.node_as("m", MapNode).body
    assert {nid: type(step) for nid, step in steps.items()} == {
        "p": PassStep,
        "t": ToolStep,
        "a": AgentStep,
        "w": WorkflowStep,
    }
    assert type(body) is PassStep and body.kind == "pass"
    common = {f.name for f in dataclasses.fields(StepBase)}
    own = {nid: {f.name for f in dataclasses.fields(s)} - common for nid, s in steps.items()}
    assert own["p"] == {"value"}
    assert own["t"] == {"tool", "args", "labels"}
    assert own["w"] == {"workflow", "workflow_version", "workflow_input"}
    assert "prompt" in own["a"] and "tool" not in own["a"] and "value" not in own["a"]
    # What a step's templates read is computed from its own templates.
    agent = steps["a"]
    assert isinstance(agent, AgentStep)
    assert agent.templates == (agent.prompt, agent.system) and steps["t"].names == frozenset()
    with pytest.raises(TypeError, match="not a map node"):
        plan.node_as("p", MapNode)
