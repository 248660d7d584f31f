"""`compile_stored`: the plan and the stored form from one walk of the spec's values; the DAG
compiler reads node ids, needs, kinds and pass and tool calls from that stored form."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import compiler
from agentrun.engine.compiler import compile_stored, compile_workflow
from agentrun.engine.errors import InvalidWorkflow
from agentrun.engine.loader import spec_from_dict, spec_to_dict
from agentrun.engine.plan import DagPlan, PassNode, ToolNode
from agentrun.integrations import default_agents, default_tools

DOC: dict[str, Any] = {
    "name": "stored",
    "nodes": [
        {"id": "a", "pass": {"value": {"n": 2, "xs": [1, 2.5, {"k": 3}], "s": "x"}}},
        {"id": "b", "needs": ["a"], "pass": {"value": 7}},
        {
            "id": "c",
            "needs": ["a", "b"],
            "tool": {
                "name": "core.echo",
                "args": {"n": 4, "from": "${{ nodes.a.output.n }}", "l": [1.0, 1.5]},
                "labels": {"region": "eu"},
            },
        },
        {"id": "d", "needs": ["c"], "pass": {}},
        {"id": "e", "needs": ["d"], "priority": 3, "pass": {"value": 1}},
    ],
}


def _stored(doc: dict[str, Any]) -> tuple[DagPlan, dict[str, Any]]:
    plan, stored = compile_stored(
        spec_from_dict(doc), tools=default_tools(), agents=default_agents()
    )
    assert isinstance(plan, DagPlan)
    return plan, stored


def test_calls_read_from_the_stored_form_hold_integral_numbers_as_ints() -> None:
    plan, stored = _stored(DOC)
    assert stored == spec_to_dict(spec_from_dict(DOC))
    a, b, c, d = (plan.nodes[x] for x in "abcd")
    assert isinstance(a, PassNode) and isinstance(b, PassNode) and isinstance(d, PassNode)
    value = a.step.value.constant
    assert value == {"n": 2, "xs": [1, 2.5, {"k": 3}], "s": "x"}
    assert type(value["n"]) is int and type(value["xs"][0]) is int
    assert type(value["xs"][2]["k"]) is int and type(value["xs"][1]) is float
    assert b.step.value.constant == 7 and type(b.step.value.constant) is int
    assert d.step.value.constant is None
    assert isinstance(c, ToolNode)
    assert c.step.tool is not None and c.step.tool.name == "core.echo"
    assert c.step.labels == {"region": "eu"}
    assert c.node_refs == {"a"} and c.names == {"nodes"}
    args = c.step.args.evaluate({"nodes": {"a": {"output": {"n": 9}}}})
    assert args == {"n": 4, "from": 9, "l": [1, 1.5]}
    assert type(args["n"]) is int and type(args["l"][0]) is int
    assert [e.source for e in c.incoming] == ["a", "b"]
    assert plan.nodes["e"].priority == 3


def test_the_plan_shares_no_container_with_the_stored_form() -> None:
    plan, stored = _stored(DOC)
    stored["nodes"][0]["pass"]["value"]["xs"].append(4)
    stored["nodes"][2]["tool"]["labels"]["region"] = "us"
    a, c = plan.nodes["a"], plan.nodes["c"]
    assert isinstance(a, PassNode) and isinstance(c, ToolNode)
    assert a.step.value.constant["xs"] == [1, 2.5, {"k": 3}]
    assert c.step.labels == {"region": "eu"}


def test_a_spec_the_checked_walk_doubts_is_stored_as_the_printer_prints_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected, _ = _stored(DOC)
    monkeypatch.setattr(compiler, "checked_dict", lambda spec: None)
    plan, stored = _stored(DOC)
    assert stored == spec_to_dict(spec_from_dict(DOC))
    assert list(plan.nodes) == list(expected.nodes)
    assert plan.stages == expected.stages


def test_node_problems_read_from_the_stored_form_keep_their_paths() -> None:
    doc = {
        "name": "bad",
        "nodes": [
            {"id": "a", "pass": {}},
            {"id": "a", "pass": {}},
            {"needs": ["a"], "pass": {}},
            {"id": "b", "needs": ["a", "a", "zz", "b"], "tool": {"args": 1}},
            {"id": "c"},
        ],
    }
    with pytest.raises(InvalidWorkflow) as err:
        compile_workflow(spec_from_dict(doc), tools=default_tools(), agents=default_agents())
    found = {(d.path, d.message) for d in err.value.diagnostics}
    assert ("nodes[1].id", "duplicate id 'a' (first at nodes[0])") in found
    assert ("nodes[2].id", "is required") in found
    assert ("nodes[3].needs[1]", "'a' is listed twice") in found
    assert ("nodes[3].needs[2]", "unknown node 'zz'") in found
    assert ("nodes[3].needs[3]", "a node cannot need itself") in found
    assert ("nodes[3].tool.name", "is required") in found
    assert (
        "nodes[4]",
        "needs exactly one kind: agent, tool, map, switch, wait, aggregate, workflow or pass",
    ) in found
