"""Sagas: once an execution compensates (a `compensate` handler, or a cancel that asks for
it), the forward run stops and every succeeded node with a `compensate` step is undone, in
reverse completion order (or in order, or all at once, as `compensation:` says), each undo
with its own record (`NODE.compensate`) and retries. The execution ends COMPENSATED, or
COMPENSATION_FAILED naming what could not be undone."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import Call, RetryDue
from agentrun.engine.retry import NO_RETRY
from agentrun.engine.runtime.retries import next_retry
from agentrun.storage.records import ExecutionState, NodeState

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold


class Saga:
    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.plan = fold.plan
        # Once compensation started: node ids still to undo; None before.
        self.queue: deque[str] | None = None
        self.running: set[str] = set()
        self.done: list[str] = []
        self.failed: list[str] = []

    @property
    def active(self) -> bool:
        return self.queue is not None

    def compensate(self, error: dict[str, Any]) -> None:
        """Stops the forward run and undoes every succeeded node that has `compensate`."""
        fold = self.fold
        fold.record.error = error
        fold.cancel_all(detach=False)
        fold.handlers.escalated.clear()
        fold.journal.execution_state(ExecutionState.COMPENSATING, {"error": error})
        done = sorted(
            (
                r
                for r in fold.records.values()
                if r.state is NodeState.SUCCEEDED
                and self.plan.nodes[r.node_id].compensate is not None
            ),
            key=lambda r: r.completed_order,
        )
        if self.plan.compensation == "reverse":
            done.reverse()
        self.queue = deque(r.node_id for r in done)
        self._next()

    def _next(self) -> None:
        assert self.queue is not None
        parallel = self.plan.compensation == "parallel"
        while self.queue and (parallel or not self.running):
            self._launch(self.queue.popleft())
        if self.queue or self.running or self.fold.finished:
            return
        error = dict(self.fold.record.error or {})
        error["details"] = dict(
            error.get("details") or {},
            compensated=list(self.done),
            not_compensated=list(self.failed),
        )
        self.fold.finish(
            ExecutionState.COMPENSATION_FAILED if self.failed else ExecutionState.COMPENSATED,
            error=error,
        )

    def _launch(self, node_id: str) -> None:
        fold = self.fold
        node, rec = self.plan.nodes[node_id], fold.records[node_id]
        key = TaskKey(node_id, role=Role.COMPENSATE)
        crec = fold.aux(key)
        crec.attempt += 1
        crec.wake_at = None
        if crec.started_at is None:
            crec.started_at = fold.clock()
        self.running.add(node_id)
        if rec.state is not NodeState.COMPENSATING:
            fold.journal.node_state(rec, NodeState.COMPENSATING, {"attempt": rec.attempt})
        fold.journal.node_state(crec, NodeState.RUNNING, {"attempt": crec.attempt})
        assert node.compensate is not None
        fold.launch(Call(key, node, node.compensate, crec.attempt, {"output": rec.output}))

    def retry_due(self, node_id: str) -> None:
        if self.queue is not None and node_id in self.running:
            self._launch(node_id)

    def call_done(self, key: TaskKey, attempt: int, ok: bool, value: Any) -> None:
        fold = self.fold
        node_id = key.node
        crec = fold.items.get(key)
        if crec is None or crec.attempt != attempt or crec.state is not NodeState.RUNNING:
            return
        node, rec = self.plan.nodes[node_id], fold.records[node_id]
        assert node.compensate is not None
        if ok:
            crec.output = value
            crec.ended_at = rec.ended_at = fold.clock()
            fold.journal.node_state(
                crec, NodeState.SUCCEEDED, {"attempt": attempt, "output": value}
            )
            fold.journal.node_state(rec, NodeState.COMPENSATED, {"attempt": rec.attempt})
            self.done.append(node_id)
        else:
            crec.error = value
            policy = node.compensate.retry or NO_RETRY
            delay = next_retry(policy, node.compensate, attempt, value, fold.rng)
            if delay is not None:
                crec.wake_at = fold.clock() + delay
                fold.journal.node_state(
                    crec, NodeState.RETRYING, {"attempt": attempt, "error": value, "delay": delay}
                )
                fold.arm_timer(key, delay, RetryDue(key))
                return
            crec.ended_at = fold.clock()
            fold.journal.node_state(crec, NodeState.FAILED, {"attempt": attempt, "error": value})
            fold.journal.node_state(
                rec, NodeState.COMPENSATION_FAILED, {"attempt": rec.attempt, "error": value}
            )
            self.failed.append(node_id)
        self.running.discard(node_id)
        self._next()

    def restore(self) -> None:
        """Continues a compensation cut short by a restart; a compensation whose completion
        was committed does not run again, one in flight runs again with the same key."""
        fold = self.fold
        self.queue = deque()
        ordered = sorted(
            (
                r
                for r in fold.records.values()
                if r.node_id in self.plan.nodes
                and self.plan.nodes[r.node_id].compensate is not None
            ),
            key=lambda r: r.completed_order,
        )
        if self.plan.compensation == "reverse":
            ordered.reverse()
        now = fold.clock()
        for rec in ordered:
            key = TaskKey(rec.node_id, role=Role.COMPENSATE)
            crec = fold.items.get(key)
            if rec.state is NodeState.COMPENSATED:
                self.done.append(rec.node_id)
            elif rec.state is NodeState.COMPENSATION_FAILED:
                self.failed.append(rec.node_id)
            elif (
                rec.state is NodeState.COMPENSATING
                and crec is not None
                and crec.state is NodeState.RETRYING
            ):
                self.running.add(rec.node_id)
                fold.arm_timer(key, max(0.0, (crec.wake_at or now) - now), RetryDue(key))
            elif rec.state is NodeState.COMPENSATING:
                if crec is not None:
                    crec.attempt -= 1  # the interrupted attempt is run again, not counted
                self._launch(rec.node_id)
            elif rec.state is NodeState.SUCCEEDED:
                self.queue.append(rec.node_id)
        self._next()
