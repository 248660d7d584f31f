"""The state of one DAG execution and the rules that change it: a message in, state changes
(written to the `Journal`) and effects out. Nothing here awaits, touches the event loop or the
store: the loop (`dag/loop.py`) feeds messages, performs the effects, commits the journal and
only then launches the calls the fold asked for, so a completion is durable before any
successor starts. Tests drive a `Fold` directly, without asyncio.

The fold is split along its seams; each part holds its own state and calls back here:
`Graph` (edges, readiness, skips), `Gate` (scheduler slots), `Handlers` (error handlers,
fallbacks, escalations), `Waits` (waits and signals), `Maps`, `Saga`. Recovery from stored
records is `dag/restore.py`.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, assert_never

from agentrun.engine import limits, sizes
from agentrun.engine.dag.calls import pure_synchronous
from agentrun.engine.dag.gate import Gate, Gating
from agentrun.engine.dag.graph import Graph
from agentrun.engine.dag.handlers import Handlers
from agentrun.engine.dag.journal import Journal
from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.maps import Maps
from agentrun.engine.dag.messages import (
    Ack,
    ArmTimer,
    BreakerChanged,
    Call,
    Cancel,
    CancelCall,
    CancelTimer,
    DeadlineReached,
    Done,
    Effect,
    Emitted,
    EscalationTimedOut,
    Fail,
    Granted,
    Message,
    Pause,
    ReleaseSlot,
    Resume,
    RetryDue,
    SignalArrived,
    SignalOffered,
    WaitOver,
)
from agentrun.engine.dag.saga import Saga
from agentrun.engine.dag.values import (
    activation,
    boolean,
    execution_output,
    expression_failure,
    inline_value,
    node_output,
)
from agentrun.engine.dag.waits import Waits
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import (
    AgentNode,
    AggregateNode,
    DagPlan,
    MapNode,
    NodePlan,
    PassNode,
    StepNode,
    SwitchNode,
    ToolNode,
    WaitNode,
    WorkflowNode,
)
from agentrun.engine.ports import ToolFailure
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.retries import next_retry
from agentrun.storage.records import ExecutionRecord, ExecutionState, NodeRecord, NodeState

log = logging.getLogger("agentrun.engine")

# Enum members read on every step, as module constants: on Python 3.11 a member read
# through its class (`NodeState.RUNNING`) goes through `EnumType.__getattr__`, ~0.2 us.
_MAIN = Role.MAIN
_COMPENSATE = Role.COMPENSATE
_FALLBACK = Role.FALLBACK
_EXECUTION_RUNNING = ExecutionState.RUNNING
_RUNNING = NodeState.RUNNING
_READY = NodeState.READY
_SUCCEEDED = NodeState.SUCCEEDED


class Fold:
    """One execution's state; `apply` a message, `turn`, then take the journal's batch, the
    effects and the calls (in that order: the loop commits before it launches)."""

    def __init__(
        self,
        plan: DagPlan,
        record: ExecutionRecord,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        secrets: Mapping[str, str] | None = None,
        gating: Gating | None = None,
    ) -> None:
        self.plan = plan
        self.record = record
        self.id = record.id
        self.clock = clock
        self.rng = rng
        self.secrets: Mapping[str, str] = secrets or {}
        self.journal = Journal(record, clock)
        # The nodes' own records, and the others (map items, fallbacks, compensations).
        self.records: dict[str, NodeRecord] = {}
        self.items: dict[TaskKey, NodeRecord] = {}
        # Nodes waiting for a retry delay.
        self.retrying: set[str] = set()
        # Calls launched and not done (by their keys' text: hashed on every launch and
        # outcome, a string's hash is cached); timers armed; calls to launch after the commit.
        self.calls: dict[str, TaskKey] = {}
        self.timers: set[TaskKey] = set()
        self.to_launch: list[Call] = []
        # Set by the loop: runs a pure synchronous tool's attempt at once and gives its
        # outcome (`calls.attempt_now`); such calls of nodes and map items then run inside
        # the turn (`inline`, in launch order), as a `pass` node computes: repeating one
        # changes nothing, so it need not be recorded RUNNING before it runs.
        self.run_inline: Callable[[Call], tuple[bool, Any]] | None = None
        self.inline: deque[Call] = deque()
        self.effects: list[Effect] = []
        self.finished = False
        self.paused = record.state is ExecutionState.PAUSED
        # Set by the loop while the engine stops: nothing new starts.
        self.draining = False
        self.graph = Graph(self)
        self.gate = Gate(self, gating or Gating())
        self.handlers = Handlers(self)
        self.waits = Waits(self)
        self.maps = Maps(self)
        self.saga = Saga(self)

    def close(self) -> None:
        """Cuts the parts' references back to the fold once its run stopped, so a finished
        execution is freed by reference counting at once, not by a later full collection
        (`tune_gc` makes those rare)."""
        for part in (self.graph, self.gate, self.handlers, self.waits, self.maps, self.saga):
            del part.fold
        self.run_inline = None

    # ------------------------------------------------------------ plumbing
    def node(self, node_id: str) -> NodeRecord:
        """The node's record, PENDING if it had none."""
        rec = self.records.get(node_id)
        if rec is None:
            rec = self.records[node_id] = NodeRecord(self.id, node_id, NodeState.PENDING)
        return rec

    def aux(self, key: TaskKey) -> NodeRecord:
        """The record of a map item, a fallback or a compensation, PENDING if it had none."""
        rec = self.items.get(key)
        if rec is None:
            rec = self.items[key] = NodeRecord(self.id, str(key), NodeState.PENDING)
        return rec

    def record_of(self, key: TaskKey) -> NodeRecord | None:
        return self.records.get(key.node) if key.is_node else self.items.get(key)

    def activation(
        self,
        names: frozenset[str],
        node_refs: frozenset[str],
        extra: dict[str, Any] | None = None,
        attempt: int = 1,
    ) -> dict[str, Any]:
        return activation(self.record, self.records, self.secrets, names, node_refs, extra, attempt)

    def effect(self, effect: Effect) -> None:
        self.effects.append(effect)

    def take_effects(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def launch(self, call: Call) -> None:
        if self.run_inline is not None and call.key.role is _MAIN and pure_synchronous(call.step):
            self.inline.append(call)
        else:
            self.to_launch.append(call)

    def take_launches(self) -> list[Call]:
        """The calls to start now that the turn is committed; they count as running."""
        launches, self.to_launch = self.to_launch, []
        calls = self.calls
        for call in launches:
            calls[call.key.text] = call.key
        return launches

    def arm_timer(self, key: TaskKey, delay: float, fire: Message) -> None:
        self.timers.add(key)
        self.effects.append(ArmTimer(key, delay, fire))

    def drop_timer(self, key: TaskKey) -> None:
        if key in self.timers:
            self.timers.discard(key)
            self.effects.append(CancelTimer(key))

    # ------------------------------------------------------------ lifecycle
    def start_fresh(self) -> None:
        now = self.clock()
        self.record.started_at = now
        if self.plan.timeout and self.record.deadline is None:
            self.record.deadline = now + self.plan.timeout
        if not self.paused:
            self.journal.execution_state(ExecutionState.RUNNING)
        self.journal.execution_changed()
        for nid in self.plan.roots:
            self.graph.resolve(nid)

    def apply(self, msg: Message) -> None:
        """One message into the state (Temporal's `_apply(job)`)."""
        if self.finished:
            match msg:
                case Pause(ack) | Resume(ack) | Cancel(ack) | SignalOffered(_, ack):
                    self._ack(ack)  # an offered signal is declined: its caller stores it
                case Granted(key):
                    self.effect(ReleaseSlot(key))
            return
        if type(msg) is Done:  # most messages: no match statement to go through
            self.outcome(msg.key, msg.attempt, msg.ok, msg.value)
            return
        match msg:
            case RetryDue(key):
                self._retry_due(key)
            case WaitOver(key, timed_out):
                self.waits.over(key, timed_out)
            case SignalArrived(signal, fresh):
                self.waits.signal(signal, fresh=fresh)
            case SignalOffered(signal, ack):
                self.waits.offer(signal)
                self._ack(ack)
            case DeadlineReached():
                self.finish(
                    ExecutionState.TIMED_OUT,
                    error={
                        "type": "timeout",
                        "message": f"execution exceeded its timeout of {self.plan.timeout}s",
                    },
                )
            case Pause(ack) | Resume(ack) if self.saga.active:
                # Compensating: the saga runs to its end; pause and resume have nothing to act on.
                self._ack(ack)
            case Pause(ack, data):
                if not self.paused:
                    self.paused = True
                    self.journal.execution_state(ExecutionState.PAUSED, data)
                self._ack(ack)
            case Resume(ack, override):
                if self.paused:
                    self.paused = False
                    resumed = self.handlers.resume_paused(override)
                    self.journal.execution_state(
                        ExecutionState.RUNNING, {"resumed_nodes": resumed} if resumed else None
                    )
                    self.maps.refill_all()
                self._ack(ack)
            case Cancel(ack, compensate):
                if not self.saga.active:
                    error = {"type": "cancelled", "message": "cancelled by request"}
                    if compensate:
                        self.saga.compensate(error)
                    else:
                        self.finish(ExecutionState.CANCELLED, error=error)
                self._ack(ack)
            case Fail(error):
                self.finish(ExecutionState.FAILED, error=error)
            case Granted():
                self.gate.granted(msg)
            case Emitted(key, type_, data):
                if type_ == "agent.usage" and isinstance(data, dict):
                    # Counted on the call's record, the node's (a map item's, a fallback's) and the execution.
                    owner = self.records.get(key.node)
                    self.journal.add_usage(
                        data, self.record_of(key), None if key.is_node else owner
                    )
                self.journal.event(type_, str(key), sizes.bound_event(type_, data))
            case BreakerChanged(name, state):
                self.journal.event(f"breaker.{state}", None, {"name": name, "state": state})
            case EscalationTimedOut(node_id):
                self.handlers.escalation_answer(node_id, None, timed_out=True)

    def _ack(self, ack: Any) -> None:
        if ack is not None:
            self.effect(Ack(ack))

    def turn(self) -> None:
        """Starts ready nodes (inline ones run to completion here) and settles the
        execution's state (LangGraph's tick)."""
        if self.finished or self.saga.queue is not None:  # compensating: the saga drives
            return
        graph, inline = self.graph, self.inline
        while True:
            while graph.ready and not self.paused and not self.finished and not self.draining:
                self.start(graph.pop_ready())
            if not inline or self.finished:
                break
            # The calls begun above (and those their outcomes begin: a map's next items).
            run_inline = self.run_inline
            assert run_inline is not None
            while inline and not self.finished:
                call = inline.popleft()
                ok, value = run_inline(call)
                self.outcome(call.key, call.attempt, ok, value)
        if self.finished:
            return
        if graph.undecided == 0:
            self._succeed()
            return
        if self.paused:
            self.journal.execution_state(ExecutionState.PAUSED)
        elif self.handlers.escalated:
            self.journal.execution_state(ExecutionState.ESCALATED)
        elif (
            self.calls
            or self.to_launch
            or graph.ready
            or self.retrying
            or self.gate.gated
            or self.maps.busy
        ):
            self.journal.execution_state(_EXECUTION_RUNNING)
        elif self.waits.waiting or self.timers:
            self.journal.execution_state(ExecutionState.WAITING)

    # ------------------------------------------------------------ outcomes in
    def outcome(self, key: TaskKey, attempt: int, ok: bool, value: Any) -> None:
        """A call's attempt ended (a `Done`, or an inline call's outcome)."""
        self.calls.pop(key.text, None)
        if self.gate.slots:
            self.gate.free(key)
        if not ok:
            value = sizes.bound_error(value)
        elif key.index is not None or key.role is not _MAIN:  # an item, an undo, a fallback
            too_large = sizes.output_error("the output", value)
            if too_large is not None:
                ok, value = False, too_large
        if key.index is not None:
            self.maps.item_done(key, attempt, ok, value)
        elif key.role is _COMPENSATE:
            self.saga.call_done(key, attempt, ok, value)
        elif key.role is _FALLBACK:
            self.handlers.fallback_done(key, attempt, ok, value)
        else:
            node = self.plan.nodes[key.node]
            rec = self.records[key.node]
            if rec.attempt != attempt or rec.state is not _RUNNING:
                return  # a late answer from a cancelled attempt
            if ok:
                self.succeeded(node, rec, value)
            else:
                self.attempt_failed(node, rec, value)

    def _retry_due(self, key: TaskKey) -> None:
        self.timers.discard(key)
        if key.is_item:
            self.maps.item_retry(key)
            return
        if key.role is Role.COMPENSATE:
            self.saga.retry_due(key.node)
            return
        self.retrying.discard(key.node)
        rec = self.records.get(key.node)
        if rec is None or rec.state is not NodeState.RETRYING:
            return
        self.journal.node_state(rec, NodeState.READY, {"attempt": rec.attempt + 1})
        self.graph.push_ready(self.plan.nodes[key.node])

    # ------------------------------------------------------------- running
    def start(self, node: NodePlan) -> None:
        rec = self.records[node.id]
        if rec.state is not _READY:
            return
        if node.when is not None:
            try:
                ok = boolean(node.when, self.activation(node.when.names, node.when.node_refs))
            except ExpressionError as exc:
                self.node_failed(node, rec, expression_failure(exc))
                return
            if not ok:
                self.graph.skip(node, "when")
                return
        match node:  # the common kinds first
            case ToolNode() | AgentNode() | WorkflowNode():
                key = TaskKey.of(node.id)
                if self.gate.at_once(node, node.step):
                    self._go(key, node, rec, None)
                else:
                    self.gate.request(
                        key, node, node.step, lambda grant: self._go(key, node, rec, grant)
                    )
            case PassNode() | SwitchNode() | AggregateNode():
                self._inline(node, rec)
            case WaitNode():
                self.waits.start(node, rec)
            case MapNode():
                self.maps.start(node, rec)
            case _:
                assert_never(node)

    def _inline(self, node: PassNode | SwitchNode | AggregateNode, rec: NodeRecord) -> None:
        """A node that computes its value in the turn (no I/O, no waiting)."""
        self.begin_attempt(rec)
        if type(node) is PassNode and node.step.value.is_constant:  # most inline nodes
            self.succeeded(node, rec, node.step.value.constant)
            return
        try:
            value = inline_value(node, rec.attempt, self.activation, self.graph.taken_outputs)
            if isinstance(node, SwitchNode):
                self.graph.choice[node.id] = value
        except ExpressionError as exc:
            self.attempt_failed(node, rec, expression_failure(exc))
            return
        except ToolFailure as exc:
            self.attempt_failed(node, rec, error_dict(exc.type, exc.message, exc.details))
            return
        except Exception as exc:  # a bug here must fail the node, not stop the loop
            log.exception("inline node %s of %s failed unexpectedly", node.id, self.id)
            self.attempt_failed(node, rec, error_dict("internal", f"{type(exc).__name__}: {exc}"))
            return
        self.succeeded(node, rec, value)

    def _go(
        self,
        key: TaskKey,
        node: ToolNode | AgentNode | WorkflowNode,
        rec: NodeRecord,
        grant: Granted | None,
    ) -> None:
        self.begin_attempt(rec, grant)
        self.launch(Call(key, node, node.step, rec.attempt))

    def begin_attempt(self, rec: NodeRecord, grant: Granted | None = None) -> None:
        rec.attempt += 1
        rec.wake_at = None
        now = self.clock()
        if rec.started_at is None:
            rec.started_at = now
        data: dict[str, Any] = {"attempt": rec.attempt}
        if grant is not None:
            data["queued_seconds"] = round(grant.queued_seconds, 6)
            if grant.throttled:
                data["rate_limited"] = True
        self.journal.node_state(rec, _RUNNING, data, now)

    # -------------------------------------------------------------- outcomes
    def succeeded(self, node: NodePlan, rec: NodeRecord, raw: Any) -> None:
        """The node's call succeeded with `raw`: its `output` transform and `export`, then the
        node is decided and its edges with it."""
        if node.output is None and not node.export:  # most nodes: the value as it is
            output, too_large = raw, None
            if sizes.oversize(raw, limits.current().output_bytes) is not None:
                too_large = sizes.output_error("the output", raw)
        else:
            try:
                output, new_vars, too_large = node_output(
                    node, raw, self.activation, rec.attempt, self.record.vars
                )
            except ExpressionError as exc:
                self.node_failed(node, rec, expression_failure(exc))
                return
            if too_large is None and new_vars is not None:
                self.record.vars = new_vars
                self.journal.execution_changed()
        if too_large is not None:
            self.node_failed(node, rec, too_large)
            return
        rec.output = output
        rec.error = None
        rec.ended_at = now = self.clock()
        graph = self.graph
        graph.decided(rec)
        self.journal.node_state(rec, _SUCCEEDED, {"attempt": rec.attempt, "output": output}, now)
        graph.decide_edges(node.id, True)

    def attempt_failed(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """An attempt failed: another after the policy's delay, else the handlers decide."""
        rec.error = err
        # After a resume from `on_exhausted: pause` the policy counts attempts afresh.
        counted = rec.attempt - (rec.exhausted or {}).get("base", 0)
        step = node.step if isinstance(node, StepNode) else None
        delay = next_retry(self.handlers.policy(node, err["type"]), step, counted, err, self.rng)
        if node.on_exhausted == "pause" and err["type"] == "circuit_open":
            delay = None  # retrying into an open breaker only spends the attempts: pause at once
        if delay is not None and (
            node.total_timeout is None
            or self.clock() + delay - (rec.started_at or 0) < node.total_timeout
        ):
            rec.wake_at = self.clock() + delay
            self.journal.node_state(
                rec, NodeState.RETRYING, {"attempt": rec.attempt, "error": err, "delay": delay}
            )
            self.retrying.add(node.id)
            key = TaskKey.of(node.id)
            self.arm_timer(key, delay, RetryDue(key))
            return
        self.handlers.fail(node, rec, err)

    def node_failed(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """The node failed for good: so does the execution."""
        rec.error = err
        rec.ended_at = self.clock()
        self.graph.decided(rec)
        self.journal.node_state(rec, NodeState.FAILED, {"attempt": rec.attempt, "error": err})
        error = dict(err)
        error["node"] = node.id
        self.finish(ExecutionState.FAILED, error=error)

    # --------------------------------------------------------------- endings
    def _succeed(self) -> None:
        try:
            output = execution_output(self.plan, self.records, self.activation)
        except ExpressionError as exc:
            self.finish(
                ExecutionState.FAILED,
                error={
                    "type": "expression_error",
                    "message": exc.message,
                    "details": {"path": exc.path},
                },
            )
            return
        too_large = sizes.output_error("the execution's output", output)
        if too_large is not None:
            self.finish(ExecutionState.FAILED, error=too_large)
            return
        self.record.output = output
        self.finish(ExecutionState.SUCCEEDED)

    def finish(self, state: ExecutionState, error: dict[str, Any] | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self.cancel_all(detach=False)
        self.record.error = error
        self.record.ended_at = self.clock()
        self.journal.execution_state(
            state, {"error": error} if error else {"output": self.record.output}
        )

    def cancel_all(self, *, detach: bool) -> None:
        """Cancels running calls and timers; unless detaching (shutdown), records it."""
        if not (
            self.calls
            or self.to_launch
            or self.inline
            or self.timers
            or self.retrying
            or self.graph.ready
            or self.gate.gated
            or self.gate.slots
            or self.maps.active
            or self.waits.pending
        ):
            return  # nothing runs, waits or is queued (a run that ended in its turn)
        # Calls running, and those begun in this turn but not launched yet (the loop launches
        # after its commit).
        for key in [
            *self.calls.values(),
            *(call.key for call in self.to_launch),
            *(call.key for call in self.inline),
        ]:
            if key.text in self.calls:
                self.effect(CancelCall(key))
            if not detach:
                self._cancelled(self.record_of(key), NodeState.RUNNING)
        self.calls.clear()
        self.to_launch.clear()
        self.inline.clear()
        self.gate.drop_all()
        for key in list(self.timers):
            self.effect(CancelTimer(key))
            if not detach and key.is_node:
                self._cancelled(self.records.get(key.node), NodeState.RETRYING, NodeState.WAITING)
        self.timers.clear()
        self.retrying.clear()
        if not detach:
            self.maps.clear()  # no queued item may start once the forward run stopped
            for _, _, nid in self.graph.ready:
                self._cancelled(self.records[nid], NodeState.READY, ended=False)
            self.graph.ready.clear()
            self.waits.cancel_all()

    def _cancelled(self, rec: NodeRecord | None, *states: NodeState, ended: bool = True) -> None:
        if rec is not None and rec.state in states:
            if ended:
                rec.ended_at = self.clock()
            self.journal.node_state(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
