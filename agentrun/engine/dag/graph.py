"""The DAG's progress: which incoming edges of each node are decided and taken, which nodes
are ready (a heap by priority, then arrival), which are decided. A node is resolved once
all its incoming edges are decided: READY, or SKIPPED when no edge (or, for `join: all`, not
every edge) was taken; a skip decides its own outgoing edges as not taken, so a dead path
propagates in one pass. This is LangGraph's `prepare_next_tasks` for a DAG."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.dag.values import boolean, expression_failure
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import EdgePlan, NodePlan
from agentrun.storage.records import NodeRecord, NodeState

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold

# Enum members read on every step, as module constants: on Python 3.11 a member read
# through its class (`NodeState.RUNNING`) goes through `EnumType.__getattr__`, ~0.2 us.
_PENDING = NodeState.PENDING
_READY = NodeState.READY


class Graph:
    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.nodes = fold.plan.nodes
        # Incoming edges not decided yet, per node.
        self.pending = {nid: len(p.incoming) for nid, p in self.nodes.items()}
        self.taken: dict[str, list[EdgePlan]] = {}
        # What taken edges' `input` mapped, and edge expressions that failed, per target.
        self.edge_inputs: dict[str, dict[str, Any]] = {}
        self.edge_errors: dict[str, ExpressionError] = {}
        # The case each decided switch chose.
        self.choice: dict[str, str] = {}
        self.undecided = len(self.nodes)
        # Decided nodes so far: each decided node's `completed_order`.
        self.completed = 0
        self.ready: list[tuple[int, int, str]] = []
        self._ready_seq = 0

    def push_ready(self, node: NodePlan) -> None:
        self._ready_seq += 1
        heapq.heappush(self.ready, (-node.priority, self._ready_seq, node.id))

    def pop_ready(self) -> NodePlan:
        return self.nodes[heapq.heappop(self.ready)[2]]

    def resolve(self, node_id: str) -> None:
        """All incoming edges of `node_id` are decided: it becomes READY or SKIPPED."""
        fold = self.fold
        node = self.nodes[node_id]
        rec = fold.records.get(node_id)
        if rec is not None and rec.state is not _PENDING:
            return  # restored: it already moved on
        taken = self.taken.get(node_id, ())
        if node.incoming and (not taken or (node.join_all and len(taken) < len(node.incoming))):
            self.skip(node, "dead_path" if not taken else "join")
            return
        err = self.edge_errors.get(node_id)
        if rec is None:  # `fold.node`, written out
            rec = fold.records[node_id] = NodeRecord(fold.id, node_id, _PENDING)
        if self.edge_inputs and node_id in self.edge_inputs:
            mapped = self.edge_inputs.pop(node_id)
            too_large = sizes.node_input_error(mapped)
            if too_large is not None:
                fold.journal.node_state(rec, _READY)
                fold.node_failed(node, rec, too_large)
                return
            rec.input = mapped
        if err is not None:
            fold.journal.node_state(rec, _READY)
            fold.node_failed(node, rec, expression_failure(err))
            return
        fold.journal.node_state(rec, _READY)
        self._ready_seq += 1  # `push_ready`, written out
        heapq.heappush(self.ready, (-node.priority, self._ready_seq, node_id))

    def skip(self, node: NodePlan, reason: str, output: Any = None) -> None:
        fold = self.fold
        rec = fold.node(node.id)
        rec.output = output
        rec.skip_reason = reason
        rec.ended_at = fold.clock()
        self.decided(rec)
        fold.journal.node_state(rec, NodeState.SKIPPED, {"skip_reason": reason})
        self.decide_edges(node.id, reason == "handler")

    def decided(self, rec: NodeRecord) -> None:
        self.completed += 1
        rec.completed_order = self.completed
        self.undecided -= 1

    def decide_edges(self, node_id: str, success: bool) -> None:
        """Decides every outgoing edge of a decided node (its `when`, its `input` mapping,
        a switch's choice) and resolves the targets that have nothing left to wait for."""
        node = self.nodes[node_id]
        act: dict[str, Any] | None = None
        pending, taken_by = self.pending, self.taken
        for edge in node.outgoing:
            target = edge.target
            taken = success
            if success and (edge.from_switch or edge.when is not None or edge.input is not None):
                if edge.from_switch:
                    taken = self.choice.get(node_id) == target
                if taken and (edge.when is not None or edge.input is not None):
                    if act is None:
                        # One activation for every edge of the node (one conversion into
                        # CEL), so it holds what each of their expressions reads.
                        names: frozenset[str] = frozenset()
                        refs: frozenset[str] = frozenset()
                        for e in node.outgoing:
                            for x in (e.when, e.input):
                                if x is not None:
                                    names, refs = names | x.names, refs | x.node_refs
                        act = self.fold.activation(
                            names, refs, {"output": self.fold.records[node_id].output}
                        )
                    try:
                        if edge.when is not None:
                            taken = boolean(edge.when, act)
                        if taken and edge.input is not None:
                            mapped = edge.input.evaluate(act)
                            into = self.edge_inputs.setdefault(target, {})
                            if isinstance(mapped, dict):
                                into.update(mapped)
                            else:
                                into[node_id] = mapped
                    except ExpressionError as exc:
                        self.edge_errors[target] = exc
                        taken = True
            if taken:
                into_target = taken_by.get(target)
                if into_target is None:
                    taken_by[target] = [edge]
                else:
                    into_target.append(edge)
            left = pending[target] = pending[target] - 1
            if left == 0:
                self.resolve(target)

    def taken_outputs(self, node: NodePlan) -> list[Any]:
        """The outputs of the sources whose edges into `node` were taken, in `needs` order."""
        order = {nid: i for i, nid in enumerate(e.source for e in node.incoming)}
        sources = sorted({e.source for e in self.taken.get(node.id, ())}, key=order.__getitem__)
        return [self.fold.records[s].output for s in sources]
