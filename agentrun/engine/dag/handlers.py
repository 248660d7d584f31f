"""A node whose retries are spent goes to the workflow's error handlers (FORMAT.md, "first
match wins"): `skip` it with an output, run a `fallback` step in its place, `compensate` the
execution, `escalate` to a person (an `escalation` signal, or its timeout, answers), or no
handler: the execution fails. A matching `retry` handler replaces the node's retry policy. With no handler, a node
with `on_exhausted: pause` pauses the execution on itself instead, until an operator resumes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import Call, EscalationTimedOut
from agentrun.engine.dag.values import expression_failure
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import HandlerPlan, NodePlan, ToolNode
from agentrun.engine.retry import RetrySpec
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.records import ExecutionState, NodeRecord, NodeState

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold


class Handlers:
    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.plan = fold.plan
        # Nodes waiting in ESCALATED for an `escalation` signal, with the handler that sent them.
        self.escalated: dict[str, HandlerPlan] = {}
        # Nodes with `on_exhausted: pause` the execution is paused on (READY, to run on resume).
        self.paused_on: set[str] = set()

    def policy(self, node: NodePlan, error_type: str) -> RetrySpec:
        """A matching `retry` handler replaces the node's policy for the errors it matches;
        an irreversible tool is never retried automatically."""
        if self.plan.handlers:
            handler = self.plan.handler_for(node.id, error_type)
            irreversible = isinstance(node, ToolNode) and node.irreversible
            if handler is not None and handler.action == "retry" and not irreversible:
                assert handler.retry is not None
                return handler.retry
        return node.retry

    def fail(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """The node's retries are spent: the first matching handler decides, else the
        execution fails."""
        fold = self.fold
        handler = self.plan.handler_for(node.id, err["type"]) if self.plan.handlers else None
        if (
            (handler is None or handler.action == "retry")
            and node.on_exhausted == "pause"
            and err["type"] != "cancelled"
        ):
            self._pause_on(node, rec, err)
        elif handler is None or handler.action == "retry":
            fold.node_failed(node, rec, err)
        elif handler.action == "skip":
            rec.error = err
            try:
                output = (
                    handler.output.evaluate(
                        fold.activation(handler.output.names, handler.output.node_refs)
                    )
                    if handler.output is not None
                    else None
                )
            except ExpressionError as exc:
                fold.node_failed(node, rec, expression_failure(exc))
                return
            fold.graph.skip(node, "handler", output)
        elif handler.action == "fallback":
            self.start_fallback(node, rec, handler, err)
        elif handler.action == "compensate":
            rec.error = err
            rec.ended_at = fold.clock()
            fold.graph.decided(rec)
            fold.journal.node_state(rec, NodeState.FAILED, {"attempt": rec.attempt, "error": err})
            fold.saga.compensate(dict(err, node=node.id))
        else:
            self._escalate(node, rec, handler, err)

    # ------------------------------------------------- on_exhausted: pause
    def _pause_on(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """Pauses the execution on `node` instead of failing it: the node waits in READY with
        its error (stored, `exhausted`, so a restart finds it paused there), the execution's
        error names it, until an operator resumes."""
        fold = self.fold
        rec.error = err
        rec.exhausted = {"paused": True, "attempt": rec.attempt}
        fold.journal.node_state(
            rec, NodeState.READY, {"attempt": rec.attempt, "error": err, "paused": True}
        )
        fold.graph.push_ready(node)
        self.paused_on.add(node.id)
        if fold.record.error is None:
            fold.record.error = dict(err, node=node.id)
            fold.journal.execution_changed()
        if not fold.paused:
            fold.paused = True
            fold.journal.execution_state(
                ExecutionState.PAUSED, {"reason": "node_exhausted", "node": node.id, "error": err}
            )

    def resume_paused(self, override: dict[str, Any] | None) -> list[str]:
        """On resume: each node paused on starts over with a fresh attempt count (and its
        total_timeout from now); `override` {node, args} gives one its next arguments."""
        fold = self.fold
        resumed = sorted(self.paused_on)
        for node_id in resumed:
            rec = fold.records[node_id]
            rec.exhausted = {"base": rec.attempt}
            if override is not None and override.get("node") == node_id and "args" in override:
                rec.exhausted["args"] = override["args"]
            rec.started_at = fold.clock()
            fold.journal.node_changed(rec)
        self.paused_on.clear()
        if resumed and fold.record.error is not None:
            fold.record.error = None
            fold.journal.execution_changed()
        return resumed

    # ------------------------------------------------------------ fallback
    def start_fallback(
        self, node: NodePlan, rec: NodeRecord, handler: HandlerPlan, err: dict[str, Any] | None
    ) -> None:
        """Runs the handler's step in the node's place; the node stays RUNNING meanwhile."""
        fold = self.fold
        key = TaskKey(node.id, role=Role.FALLBACK)
        frec = fold.aux(key)
        frec.attempt += 1
        frec.started_at = fold.clock()
        rec.error = err
        fold.journal.node_state(
            frec, NodeState.RUNNING, {"attempt": frec.attempt, "replaces_error": err}
        )
        assert handler.fallback is not None
        fold.launch(Call(key, node, handler.fallback, frec.attempt))

    def fallback_done(self, key: TaskKey, attempt: int, ok: bool, value: Any) -> None:
        fold = self.fold
        frec = fold.items.get(key)
        node = self.plan.nodes[key.node]
        rec = fold.records[node.id]
        if frec is None or frec.attempt != attempt or frec.state is not NodeState.RUNNING:
            return
        frec.ended_at = fold.clock()
        if ok:
            frec.output = value
            fold.journal.node_state(frec, NodeState.SUCCEEDED, {"attempt": attempt})
            fold.succeeded(node, rec, value)
        else:
            frec.error = value
            fold.journal.node_state(frec, NodeState.FAILED, {"attempt": attempt, "error": value})
            # A failing fallback fails the node; handlers are not consulted again.
            fold.node_failed(node, rec, value)

    # ---------------------------------------------------------- escalation
    def _escalate(
        self, node: NodePlan, rec: NodeRecord, handler: HandlerPlan, err: dict[str, Any]
    ) -> None:
        fold = self.fold
        rec.error = err
        self.escalated[node.id] = handler
        rec.wake_at = fold.clock() + handler.timeout if handler.timeout else None
        fold.journal.node_state(rec, NodeState.ESCALATED, {"attempt": rec.attempt, "error": err})
        if handler.timeout:
            fold.arm_timer(TaskKey.of(node.id), handler.timeout, EscalationTimedOut(node.id))

    def restore_escalation(self, node: NodePlan, rec: NodeRecord, now: float) -> bool:
        """An ESCALATED node after a restart waits again (its timer re-armed); False if its
        handler is gone (the plan changed)."""
        handler = self.plan.handler_for(node.id, (rec.error or {}).get("type", "internal"))
        if handler is None or handler.action != "escalate":
            return False
        self.escalated[node.id] = handler
        if rec.wake_at is not None:
            self.fold.arm_timer(TaskKey.of(node.id), rec.wake_at - now, EscalationTimedOut(node.id))
        return True

    def escalation_answer(self, node_id: str, data: Any, *, timed_out: bool = False) -> bool:
        """An `escalation` signal (or its timeout) decides: retry, skip (with an output), or fail."""
        fold = self.fold
        handler = self.escalated.pop(node_id, None)
        if handler is None:
            return False
        fold.drop_timer(TaskKey.of(node_id))
        node, rec = self.plan.nodes[node_id], fold.records[node_id]
        action = handler.on_timeout if timed_out else data.get("action")
        if action == "retry":
            rec.wake_at = None
            fold.journal.node_state(
                rec, NodeState.READY, {"attempt": rec.attempt + 1, "escalation": "retry"}
            )
            fold.graph.push_ready(node)
        elif action == "skip":
            output = None if timed_out else data.get("output")
            fold.graph.skip(node, "handler", output)
        else:
            err = (
                dict(rec.error or {})
                if not timed_out
                else error_dict(
                    "timeout", f"escalation of {node_id!r} got no answer in {handler.timeout}s"
                )
            )
            fold.node_failed(node, rec, err)
        return True
