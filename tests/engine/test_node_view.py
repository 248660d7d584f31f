"""node_view.every_node: the workflow's nodes in order, PENDING for the unreached, map items
after their map, unknown ids last."""

from __future__ import annotations

from agentrun.engine.node_view import every_node, spec_node_ids
from agentrun.storage.records import NodeRecord, NodeState


def test_every_node_in_workflow_order() -> None:
    spec = {"nodes": [{"id": "fan"}, {"id": "sum"}, {"id": "tail"}]}
    stored = [
        NodeRecord("e", "fan[10]", NodeState.SUCCEEDED),
        NodeRecord("e", "sum", NodeState.RUNNING),
        NodeRecord("e", "fan", NodeState.SUCCEEDED),
        NodeRecord("e", "fan[2]", NodeState.SUCCEEDED),
        NodeRecord("e", "fan.compensate", NodeState.SUCCEEDED),
    ]
    nodes = every_node("e", spec_node_ids(spec), stored)
    assert [(n.node_id, n.state) for n in nodes] == [
        ("fan", NodeState.SUCCEEDED),
        ("fan[2]", NodeState.SUCCEEDED),
        ("fan[10]", NodeState.SUCCEEDED),
        ("sum", NodeState.RUNNING),
        ("tail", NodeState.PENDING),
        ("fan.compensate", NodeState.SUCCEEDED),
    ]
    assert nodes[4].execution_id == "e" and nodes[4].attempt == 0


def test_a_deleted_workflow_still_lists_the_stored_nodes() -> None:
    stored = [NodeRecord("e", "a", NodeState.SUCCEEDED)]
    assert every_node("e", [], stored) == stored
