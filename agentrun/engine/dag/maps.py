"""`map` nodes: the body step once per item, at most `max_concurrency` at a time, each item
with its own record (`NODE[i]`), attempts and retries; the node succeeds with the results in
item order once every item succeeded, and fails (its other items cancelled) when one item's
retries are spent. After a restart, succeeded items keep their results and the rest run."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentrun.engine.dag.keys import TaskKey
from agentrun.engine.dag.messages import Call, CancelCall, Granted, RetryDue, WaitOver
from agentrun.engine.dag.values import expression_failure, iso, typename
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import MapNode, WaitStep
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.retries import next_retry
from agentrun.storage.records import NodeRecord, NodeState

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold


@dataclass(slots=True)
class MapState:
    items: list[Any]
    results: list[Any]
    # Indices not yet launched, in order.
    queue: deque[int]
    running: int = 0
    remaining: int = 0
    # Indices waiting for their retry delay.
    retrying: set[int] = field(default_factory=set)
    # Indices waiting for a signal (a wait body), counted in `running` too.
    waiting: set[int] = field(default_factory=set)


class Maps:
    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.active: dict[str, MapState] = {}
        # Item records read at a restart, by map node and index.
        self.restored: dict[str, dict[int, NodeRecord]] = {}

    @property
    def busy(self) -> bool:
        return any(m.running > len(m.waiting) or m.retrying for m in self.active.values())

    def start(self, node: MapNode, rec: NodeRecord) -> None:
        fold = self.fold
        fold.begin_attempt(rec)
        try:
            items = node.items.evaluate(fold.activation(node.names, node.node_refs))
        except ExpressionError as exc:
            fold.node_failed(node, rec, expression_failure(exc))
            return
        if not isinstance(items, list):
            fold.node_failed(
                node,
                rec,
                error_dict(
                    "expression_error",
                    f"items must be a list, got {typename(items)}",
                    {"path": node.items.path},
                ),
            )
            return
        if not items:
            fold.succeeded(node, rec, [])
            return
        self.active[node.id] = MapState(
            items=items,
            results=[None] * len(items),
            queue=deque(range(len(items))),
            remaining=len(items),
        )
        self.fill(node)

    def restore(self, node: MapNode, rec: NodeRecord) -> None:
        """A map that was RUNNING at a restart: its succeeded items keep their results, an
        item cut short counts its attempt and runs again (if its policy allows)."""
        fold = self.fold
        try:
            items = node.items.evaluate(fold.activation(node.names, node.node_refs))
        except ExpressionError as exc:
            fold.node_failed(node, rec, expression_failure(exc))
            return
        state = MapState(
            items=items, results=[None] * len(items), queue=deque(), remaining=len(items)
        )
        restored = self.restored.get(node.id, {})
        waiting = []
        for i in range(len(items)):
            irec = restored.get(i)
            if irec is not None and irec.state is NodeState.SUCCEEDED:
                state.results[i] = irec.output
                state.remaining -= 1
                continue
            if (
                irec is not None
                and irec.state is NodeState.WAITING
                and isinstance(node.body, WaitStep)
            ):
                # Its wait goes on under the same id (an answer may already be stored).
                fold.items[TaskKey(node.id, i)] = irec
                state.running += 1
                state.waiting.add(i)
                waiting.append(i)
                continue
            state.queue.append(i)
            if irec is not None:
                if irec.state is NodeState.RUNNING:
                    # An attempt cut short by the restart counts; the item is retried.
                    policy = node.body.retry or node.retry
                    if not policy.allows_retry(irec.attempt, "internal"):
                        fold.node_failed(
                            node,
                            rec,
                            error_dict(
                                "internal", "the attempt was interrupted by a restart", {"index": i}
                            ),
                        )
                        return
                fold.items[TaskKey(node.id, i)] = irec
        self.active[node.id] = state
        if state.remaining == 0:
            self._finished(node)
            return
        for i in waiting:
            if node.id in self.active and isinstance(node.body, WaitStep):
                self._resume_item_wait(node, node.body, i)
        if node.id in self.active:
            self.fill(node)

    def refill_all(self) -> None:
        """On resume: queued items start again."""
        for node_id in list(self.active):
            self.fill(self.fold.plan.node_as(node_id, MapNode))

    def fill(self, node: MapNode) -> None:
        if self.fold.paused or self.fold.draining:
            return  # queued items wait for resume, which refills every map
        state = self.active[node.id]
        limit = node.max_concurrency or len(state.items)
        while state.running < limit and state.queue:
            self._launch_item(node, state.queue.popleft())

    def _launch_item(self, node: MapNode, index: int) -> None:
        state = self.active[node.id]
        state.running += 1
        key = TaskKey(node.id, index)
        if isinstance(node.body, WaitStep):
            self._item_wait(key, node, node.body)
            return
        gate = self.fold.gate
        if gate.at_once(node, node.body):
            self._item_go(key, node, None)
        else:
            gate.request(key, node, node.body, lambda grant: self._item_go(key, node, grant))

    def _item_go(self, key: TaskKey, node: MapNode, grant: Granted | None) -> None:
        fold = self.fold
        state = self.active.get(node.id)
        if state is None:
            fold.gate.free(key)
            return
        assert key.index is not None
        irec = fold.aux(key)
        irec.attempt += 1
        if irec.started_at is None:
            irec.started_at = fold.clock()
        irec.wake_at = None
        data: dict[str, Any] = {"attempt": irec.attempt, "index": key.index}
        if grant is not None and grant.throttled:
            data["rate_limited"] = True
        fold.journal.node_state(irec, NodeState.RUNNING, data)
        extra = {"item": state.items[key.index], "index": key.index}
        fold.launch(Call(key, node, node.body, irec.attempt, extra))

    def _item_wait(self, key: TaskKey, node: MapNode, body: WaitStep) -> None:
        """A map item whose body is a wait: it waits for its own answer (no scheduler slot)."""
        fold = self.fold
        assert key.index is not None
        irec = fold.aux(key)
        now = fold.clock()
        irec.attempt += 1
        if irec.started_at is None:
            irec.started_at = now
        irec.wait, data = fold.waits.pending.begin(
            key.text, irec.attempt, body.signal, body.wait_schema, now
        )
        irec.wake_at = now + body.timeout if body.timeout else None
        if irec.wake_at is not None:
            data["timeout_at"] = iso(irec.wake_at)
        self.active[node.id].waiting.add(key.index)
        fold.journal.node_state(
            irec, NodeState.WAITING, {**data, "attempt": irec.attempt, "index": key.index}
        )
        fold.waits.take_buffered(key)
        if key.text in fold.waits.pending and body.timeout:
            fold.arm_timer(key, body.timeout, WaitOver(key, True))

    def _resume_item_wait(self, node: MapNode, body: WaitStep, index: int) -> None:
        fold = self.fold
        key = TaskKey(node.id, index)
        irec = fold.items[key]
        fold.waits.resume(key, irec, body.signal, body.wait_schema)
        if key.text in fold.waits.pending and irec.wake_at is not None:
            fold.arm_timer(key, irec.wake_at - fold.clock(), WaitOver(key, True))

    def item_wait_over(self, key: TaskKey) -> None:
        """A map item's wait timed out: a failed attempt of the item (its retry policy says
        whether it waits again, under a new wait id)."""
        fold = self.fold
        irec = fold.items.get(key)
        if (
            irec is None
            or irec.state is not NodeState.WAITING
            or key.text not in fold.waits.pending
        ):
            return
        fold.timers.discard(key)
        fold.waits.pending.end(key.text)
        body = fold.plan.node_as(key.node, MapNode).body
        self.item_done(
            key, irec.attempt, False, error_dict("timeout", f"wait timed out after {body.timeout}s")
        )

    def item_done(self, key: TaskKey, attempt: int, ok: bool, value: Any) -> None:
        fold = self.fold
        index = key.index
        assert index is not None
        irec = fold.items.get(key)
        state = self.active.get(key.node)
        if (
            irec is None
            or state is None
            or irec.attempt != attempt
            or irec.state not in (NodeState.RUNNING, NodeState.WAITING)
        ):
            return
        node = fold.plan.node_as(key.node, MapNode)
        state.running -= 1
        state.waiting.discard(index)
        if ok:
            irec.output = value
            irec.ended_at = fold.clock()
            fold.journal.node_state(irec, NodeState.SUCCEEDED, {"attempt": attempt, "index": index})
            state.results[index] = value
            state.remaining -= 1
            if state.remaining == 0:
                self._finished(node)
            else:
                self.fill(node)
            return
        irec.error = value
        policy = node.body.retry or fold.handlers.policy(node, value["type"])
        delay = next_retry(policy, node.body, attempt, value, fold.rng)
        if delay is not None:
            irec.wake_at = fold.clock() + delay
            fold.journal.node_state(
                irec,
                NodeState.RETRYING,
                {"attempt": attempt, "error": value, "delay": delay, "index": index},
            )
            state.retrying.add(index)
            fold.arm_timer(key, delay, RetryDue(key))
            return
        irec.ended_at = fold.clock()
        fold.journal.node_state(
            irec, NodeState.FAILED, {"attempt": attempt, "error": value, "index": index}
        )
        rec = fold.records[key.node]
        self._cancel_items(key.node)
        err = dict(value)
        err["details"] = dict(err.get("details") or {}, index=index)
        fold.handlers.fail(node, rec, err)

    def item_retry(self, key: TaskKey) -> None:
        state = self.active.get(key.node)
        index = key.index
        if state is None or index not in state.retrying:
            return
        assert index is not None
        state.retrying.discard(index)
        if self.fold.paused or self.fold.draining:
            state.queue.appendleft(index)  # retried on resume
            return
        self._launch_item(self.fold.plan.node_as(key.node, MapNode), index)

    def _finished(self, node: MapNode) -> None:
        state = self.active.pop(node.id)
        self.fold.succeeded(node, self.fold.records[node.id], state.results)

    def _cancel_items(self, node_id: str) -> None:
        """One item failed for good: the others stop (running ones are CANCELLED)."""
        fold = self.fold

        def of_this_map(key: TaskKey) -> bool:
            return key.node == node_id and key.index is not None

        for key in [k for k in fold.calls.values() if of_this_map(k)]:
            del fold.calls[key.text]
            fold.effect(CancelCall(key))
            irec = fold.items[key]
            if irec.state is NodeState.RUNNING:
                irec.ended_at = fold.clock()
                fold.journal.node_state(irec, NodeState.CANCELLED, {"attempt": irec.attempt})
        for key in fold.waits.end(of_this_map):
            irec = fold.items[key]
            if irec.state is NodeState.WAITING:
                irec.ended_at = fold.clock()
                fold.journal.node_state(irec, NodeState.CANCELLED, {"attempt": irec.attempt})
        for key in [k for k in fold.timers if of_this_map(k)]:
            fold.drop_timer(key)
        fold.gate.drop(of_this_map)
        self.active.pop(node_id, None)

    def clear(self) -> None:
        self.active.clear()
