"""Recovery: a fold rebuilt from the stored records after a restart (or for a rerun, whose
reused nodes are already SUCCEEDED). Decided nodes are replayed in completion order to
re-derive the edge decisions; nothing that completed runs again. A node caught mid-flight
is taken up where it was: a retry or wait re-armed at its stored time, an escalation waiting
again, a child workflow re-attached (its id is derived from the attempt), a fallback run
again, a map's unfinished items run, any other interrupted attempt failed as `internal` (so
its retry policy decides)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import Call, RetryDue
from agentrun.engine.dag.waits import CONTROL_SIGNAL
from agentrun.engine.plan import MapNode, SwitchNode, WaitNode, WorkflowNode
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.records import ExecutionState, NodeRecord, NodeState, SignalRecord

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold

_DONE = frozenset({NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED})


def restore(
    fold: Fold, nodes: list[NodeRecord], signals: list[SignalRecord], *, fresh: bool = False
) -> None:
    """Rebuilds `fold` from stored records; `fresh` starts a rerun."""
    plan, record, graph = fold.plan, fold.record, fold.graph
    if fresh:
        record.started_at = fold.clock()
        if plan.timeout:
            record.deadline = record.started_at + plan.timeout
    # Control requests relayed through the store (pause, resume, cancel) are applied once the
    # fold is rebuilt; the other signals are kept for the waits that take them.
    controls = [s for s in signals if s.name == CONTROL_SIGNAL]
    signals = [s for s in signals if s.name != CONTROL_SIGNAL]
    fold.waits.buffered = list(signals)
    fold.waits.seen.update(s.seq for s in signals)
    base: dict[str, NodeRecord] = {}
    items: dict[str, dict[int, NodeRecord]] = {}
    for rec in nodes:
        key = TaskKey.parse(rec.node_id)
        if key.index is not None:
            items.setdefault(key.node, {})[key.index] = rec
        elif key.role is not Role.MAIN:
            fold.items[key] = rec
        else:
            base[rec.node_id] = rec
    fold.records = base
    fold.handlers.paused_on = {
        r.node_id
        for r in base.values()
        if r.state is NodeState.READY and r.exhausted is not None and r.exhausted.get("paused")
    }
    fold.maps.restored = items
    graph.completed = max((r.completed_order for r in base.values()), default=0)
    if record.state is ExecutionState.COMPENSATING:
        fold.saga.restore()
        return
    decided = sorted(
        (r for r in base.values() if r.state in _DONE and r.node_id in plan.nodes),
        key=lambda r: r.completed_order,
    )
    for rec in decided:
        graph.undecided -= 1
        if rec.state is NodeState.SUCCEEDED or (
            rec.state is NodeState.SKIPPED and rec.skip_reason == "handler"
        ):
            if isinstance(plan.nodes[rec.node_id], SwitchNode):
                graph.choice[rec.node_id] = rec.output
            graph.decide_edges(rec.node_id, True)
        else:
            graph.decide_edges(rec.node_id, False)
    for nid in plan.roots:
        if nid not in base:
            graph.resolve(nid)
    _take_up_in_flight(fold, base)
    fold.waits.refuse_stale_answers()
    if fold.finished:
        return  # a node caught mid-flight had no attempts left: the execution ended
    if fresh:
        fold.journal.execution_state(ExecutionState.RUNNING)
    elif fold.paused:
        record.state = ExecutionState.PAUSED
    elif record.state is not ExecutionState.WAITING:
        record.state = ExecutionState.RUNNING
    # A run unloaded while it waited comes back WAITING: the turn settles its state again,
    # and writes nothing (no `execution.waiting` per reload) if it still only waits.
    for sig in controls:
        if not fold.finished:
            fold.waits.signal(sig)


def _take_up_in_flight(fold: Fold, base: dict[str, NodeRecord]) -> None:
    plan = fold.plan
    now = fold.clock()
    for rec in list(base.values()):
        if rec.node_id not in plan.nodes or rec.state in _DONE:
            continue
        node = plan.nodes[rec.node_id]
        key = TaskKey.of(node.id)
        if rec.state is NodeState.READY or rec.state is NodeState.PENDING:
            if fold.graph.pending[rec.node_id] == 0:
                fold.graph.push_ready(node)
        elif rec.state is NodeState.ESCALATED:
            if not fold.handlers.restore_escalation(node, rec, now):
                fold.node_failed(node, rec, rec.error or error_dict("internal", "escalation lost"))
        elif rec.state is NodeState.RUNNING:
            fallback = fold.items.get(TaskKey(node.id, role=Role.FALLBACK))
            if fallback is not None and fallback.state is NodeState.RUNNING:
                handler = plan.handler_for(node.id, (rec.error or {}).get("type", "internal"))
                if handler is not None and handler.action == "fallback":
                    fold.handlers.start_fallback(node, rec, handler, rec.error)
                    continue
            if isinstance(node, MapNode):
                fold.maps.restore(node, rec)
            elif isinstance(node, WorkflowNode):
                # The child execution has a deterministic id: attach to it again.
                fold.launch(Call(key, node, node.step, rec.attempt))
            else:
                fold.attempt_failed(
                    node, rec, error_dict("internal", "the attempt was interrupted by a restart")
                )
        elif rec.state is NodeState.RETRYING:
            fold.retrying.add(rec.node_id)
            fold.arm_timer(key, max(0.0, (rec.wake_at or now) - now), RetryDue(key))
        elif rec.state is NodeState.WAITING and isinstance(node, WaitNode):
            fold.waits.restore(node, rec)
