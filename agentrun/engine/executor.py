"""One execution of a DAG plan: an event-driven loop over node completions.

Each turn of the loop drains every completion that arrived, folds them into one Batch,
commits it, and only then starts what became ready and publishes the events. So a node's
completion is durable before any successor starts, and many completions share one commit.
Nodes without I/O (`pass`, `switch`, `aggregate`) run inline within the turn.

Recovery builds the same object from the stored node records (`Run.restore`): decided
nodes are replayed in completion order to re-derive edge decisions; nothing that
completed runs again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.approvals import ANSWER_PREFIX, REFUSED_PREFIX, PendingWaits
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import EdgePlan, HandlerPlan, NodePlan, Plan, StepPlan
from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.engine.retry import NO_RETRY, RetrySpec
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.redaction import redacted_batch
from agentrun.engine.runtime.retries import next_retry
from agentrun.engine.runtime.steps import breaker_for, call_agent, call_tool, invoke_step, target_of
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

log = logging.getLogger("agentrun.engine")

# Keys of the auxiliary records kept beside a node's own: its compensation and its fallback.
_COMPENSATE = ".compensate"
_FALLBACK = ".fallback"
# The signal that answers an escalation: data {action: retry|skip|fail, node?, output?}.
ESCALATION_SIGNAL = "escalation"
# Pause, resume and cancel sent through the store by a replica that does not run the
# execution: data {action, compensate}.
CONTROL_SIGNAL = "agentrun.control"

_DONE = frozenset({NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED})
_EXEC_EVENT = {s: f"execution.{s.value.lower()}" for s in ExecutionState}
_NODE_EVENT = {s: f"node.{s.value.lower()}" for s in NodeState}


@dataclass(slots=True)
class _MapState:
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


class Run:
    """The live state of one execution in this process."""

    def __init__(self, engine: Engine, plan: Plan, record: ExecutionRecord) -> None:
        self.engine = engine
        self.plan = plan
        self.record = record
        self.id = record.id
        self.records: dict[str, NodeRecord] = {}
        self.pending = {nid: len(p.incoming) for nid, p in plan.nodes.items()}
        self.taken: dict[str, list[EdgePlan]] = {}
        self.edge_inputs: dict[str, dict[str, Any]] = {}
        self.edge_errors: dict[str, ExpressionError] = {}
        self.choice: dict[str, str] = {}
        self.undecided = len(plan.nodes)
        self.ready: list[tuple[int, int, str]] = []
        self._ready_seq = 0
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        # Waits for a signal (wait nodes and map items), by wait id and signal name.
        self.waits = PendingWaits(record.id)
        self.buffered: list[SignalRecord] = []
        self.maps: dict[str, _MapState] = {}
        self.inbox: deque[tuple[Any, ...]] = deque()
        self.wakeup = asyncio.Event()
        self.batch = Batch()
        self.to_launch: list[tuple[str, Callable[[], Any]]] = []
        self.completed = 0
        self.finished = False
        self.paused = record.state is ExecutionState.PAUSED
        self.skip_handled: set[str] = set()
        self._timeout_handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.lease_lost = False
        self._replaying = False
        self._dirty: dict[str, NodeRecord] = {}
        # Records of map items, keyed `ID[INDEX]`.
        self._items: dict[str, NodeRecord] = {}
        self._items_restored: dict[str, dict[int, NodeRecord]] = {}
        # Nodes waiting for a retry delay.
        self.retrying: set[str] = set()
        # Signal seqs already handled, so a signal seen at restore and posted live counts once.
        self.seen_signals: set[int] = set()
        # Futures of control requests, resolved once their effect is committed.
        self.acks: list[asyncio.Future[None]] = []
        # Nodes waiting in ESCALATED for an `escalation` signal, with the handler that sent them.
        self.escalated: dict[str, HandlerPlan] = {}
        # The saga, once compensation started: node ids still to undo, and the outcome so far.
        self.saga: deque[str] | None = None
        self.saga_running: set[str] = set()
        self.saga_done: list[str] = []
        self.saga_failed: list[str] = []
        # Calls waiting for a scheduler slot (key -> what to do on grant), and calls holding one.
        self.gated: dict[str, Callable[[Any], None]] = {}
        self.slots: set[str] = set()
        # Nodes with `on_exhausted: pause` the execution is paused on (READY, to run on resume).
        self.paused_on: set[str] = set()

    # ------------------------------------------------------------------ events
    def _event(self, type_: str, node_id: str | None = None, data: dict[str, Any] | None = None) -> None:
        rec = self.record
        rec.last_sequence += 1
        self.batch.events.append(
            EventRecord(rec.id, rec.last_sequence, type_, self.engine.clock(), node_id, data)
        )

    def _set_exec_state(self, state: ExecutionState, data: dict[str, Any] | None = None) -> None:
        if self.record.state is state:
            return
        self.record.state = state
        self.batch.execution = self.record
        self._event(_EXEC_EVENT[state], None, data)

    def _node(self, node_id: str) -> NodeRecord:
        rec = self.records.get(node_id)
        if rec is None:
            rec = self.records[node_id] = NodeRecord(self.id, node_id, NodeState.PENDING)
        return rec

    def _set_node(self, rec: NodeRecord, state: NodeState, data: dict[str, Any] | None = None) -> None:
        rec.state = state
        self._dirty[rec.node_id] = rec
        self._event(_NODE_EVENT[state], rec.node_id, data)

    # --------------------------------------------------------------- lifecycle
    def start_fresh(self) -> None:
        now = self.engine.clock()
        self.record.started_at = now
        if self.plan.timeout and self.record.deadline is None:
            self.record.deadline = now + self.plan.timeout
        if not self.paused:
            self._set_exec_state(ExecutionState.RUNNING)
        self.batch.execution = self.record
        for nid in self.plan.roots:
            self._resolve(nid)

    def restore(self, nodes: list[NodeRecord], signals: list[SignalRecord], *, fresh: bool = False) -> None:
        """Rebuilds the run from stored records, after a restart; `fresh` starts a rerun
        whose reused nodes are already SUCCEEDED."""
        if fresh:
            self.record.started_at = self.engine.clock()
            if self.plan.timeout:
                self.record.deadline = self.record.started_at + self.plan.timeout
        self.buffered = list(signals)
        self.seen_signals.update(s.seq for s in signals)
        base = {}
        items: dict[str, list[NodeRecord]] = {}
        for rec in nodes:
            if "[" in rec.node_id:
                items.setdefault(rec.node_id.split("[", 1)[0], []).append(rec)
            elif rec.node_id.endswith((_COMPENSATE, _FALLBACK)):
                self._items[rec.node_id] = rec
            else:
                base[rec.node_id] = rec
        self.records = base
        self.paused_on = {
            r.node_id for r in base.values()
            if r.state is NodeState.READY and r.exhausted is not None and r.exhausted.get("paused")
        }
        self._items_restored = {k: {int(r.node_id.split("[", 1)[1][:-1]): r for r in v} for k, v in items.items()}
        self.completed = max((r.completed_order for r in base.values()), default=0)
        if self.record.state is ExecutionState.COMPENSATING:
            self._restore_saga()
            return
        self._replaying = True
        decided = sorted(
            (r for r in base.values() if r.state in _DONE and r.node_id in self.plan.nodes),
            key=lambda r: r.completed_order,
        )
        for rec in decided:
            self.undecided -= 1
            if rec.state is NodeState.SUCCEEDED or (
                rec.state is NodeState.SKIPPED and rec.skip_reason == "handler"
            ):
                if self.plan.nodes[rec.node_id].kind == "switch":
                    self.choice[rec.node_id] = rec.output
                self._decide_edges(rec.node_id, True)
            else:
                self._decide_edges(rec.node_id, False)
        for nid in self.plan.roots:
            if nid not in base:
                self._resolve(nid)
        self._replaying = False
        # Nodes caught mid-flight.
        now = self.engine.clock()
        for rec in list(base.values()):
            if rec.node_id not in self.plan.nodes or rec.state in _DONE:
                continue
            node = self.plan.nodes[rec.node_id]
            if rec.state is NodeState.READY or rec.state is NodeState.PENDING:
                if self.pending[rec.node_id] == 0:
                    self._push_ready(node)
            elif rec.state is NodeState.ESCALATED:
                handler = self.plan.handler_for(node.id, (rec.error or {}).get("type", "internal"))
                if handler is None or handler.action != "escalate":
                    self._node_failed(node, rec, rec.error or error_dict("internal", "escalation lost"))
                    continue
                self.escalated[node.id] = handler
                if rec.wake_at is not None:
                    self._arm_timer(node.id, rec.wake_at - now, self._escalation_timed_out)
            elif rec.state is NodeState.RUNNING:
                fallback = self._items.get(node.id + _FALLBACK)
                if fallback is not None and fallback.state is NodeState.RUNNING:
                    handler = self.plan.handler_for(node.id, (rec.error or {}).get("type", "internal"))
                    if handler is not None and handler.action == "fallback":
                        self._start_fallback(node, rec, handler, rec.error)
                        continue
                if node.kind == "map":
                    self._restore_map(node, rec)
                elif node.kind == "workflow":
                    # The child execution has a deterministic id: attach to it again.
                    attempt = rec.attempt
                    self.to_launch.append(
                        (node.id, lambda n=node, a=attempt: self._call(n.id, n, n.step, a, None, None))
                    )
                else:
                    self._attempt_failed(
                        node, rec, error_dict("internal", "the attempt was interrupted by a restart")
                    )
            elif rec.state is NodeState.RETRYING:
                self.retrying.add(rec.node_id)
                self._arm_timer(rec.node_id, max(0.0, (rec.wake_at or now) - now), self._retry_due)
            elif rec.state is NodeState.WAITING:
                self._restore_wait(node, rec)
        self._refuse_stale_answers()
        if self.finished:
            return  # a node caught mid-flight had no attempts left: the execution ended
        if fresh:
            self._set_exec_state(ExecutionState.RUNNING)
        else:
            self.record.state = ExecutionState.PAUSED if self.paused else ExecutionState.RUNNING

    def arm_deadline(self) -> None:
        if self.record.deadline is not None:
            delay = max(0.0, self.record.deadline - self.engine.clock())
            self._timeout_handle = asyncio.get_running_loop().call_later(delay, self._post, ("timeout",))

    # -------------------------------------------------------------- the loop
    async def loop(self) -> None:
        try:
            self.arm_deadline()
            while True:
                self._turn()
                await self._flush()
                if self.finished:
                    return
                if not self.inbox:
                    await self.wakeup.wait()
                self.wakeup.clear()
                while self.inbox:
                    self._handle(self.inbox.popleft())
        except BaseException:
            # Stopped (shutdown, lease lost, store failure): hand everything back as it is.
            self._cancel_all(detach=True)
            raise
        finally:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            for handle in self.timers.values():
                handle.cancel()

    def _post(self, message: tuple[Any, ...]) -> None:
        self.inbox.append(message)
        self.wakeup.set()

    def _turn(self) -> None:
        """Starts ready nodes (inline ones run to completion here) and settles the state."""
        if self.finished or self.saga is not None:
            return
        while self.ready and not self.paused and not self.finished and not self.engine.draining:
            _, _, node_id = heapq.heappop(self.ready)
            self._start(self.plan.nodes[node_id])
        if self.finished:
            return
        if self.undecided == 0:
            self._succeed()
            return
        if self.paused:
            self._set_exec_state(ExecutionState.PAUSED)
        elif self.escalated:
            self._set_exec_state(ExecutionState.ESCALATED)
        elif self.tasks or self.to_launch or self.ready or self.retrying or self.gated or any(
            m.running > len(m.waiting) or m.retrying for m in self.maps.values()
        ):
            self._set_exec_state(ExecutionState.RUNNING)
        elif self.waits or self.timers:
            self._set_exec_state(ExecutionState.WAITING)

    def _add_usage(self, key: str, usage: dict[str, Any]) -> None:
        """Sums token counts and cost on the node (and the map node of an item) and on the
        execution."""
        numbers = {k: v for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        owners = [self.records.get(key) or self._items.get(key)]
        if "[" in key or key.endswith((_COMPENSATE, _FALLBACK)):
            owners.append(self.records.get(key.split("[", 1)[0].split(".", 1)[0]))
        for rec in owners:
            if rec is not None:
                rec.usage = _summed(rec.usage, numbers)
                self._dirty[rec.node_id] = rec
        self.record.usage = _summed(self.record.usage, numbers)
        self.batch.execution = self.record

    async def _flush(self) -> None:
        batch = self.batch
        if self._dirty:
            batch.nodes = list(self._dirty.values())
        if batch.execution is None and (batch.events or batch.nodes):
            batch.execution = self.record
        if self.record.owner is not None:
            batch.fence = (self.record.owner, self.record.lease_epoch)
        redactor = self.engine.redactor
        if redactor:
            batch = redacted_batch(batch, redactor)
        if batch.events or batch.nodes or batch.execution is not None or batch.consumed_signals:
            self.batch = Batch()
            self._dirty = {}
            started = time.perf_counter()
            await self.engine.store.commit(batch)
            instr = self.engine.instrumentation
            if instr is not None:
                instr.events_committed(self.record, batch.events, time.perf_counter() - started)
            self.engine.hub.publish(self.id, batch.events)
        acks, self.acks = self.acks, []
        for fut in acks:
            if not fut.done():
                fut.set_result(None)
        launch, self.to_launch = self.to_launch, []
        for key, factory in launch:
            self.tasks[key] = asyncio.get_running_loop().create_task(factory())

    # ------------------------------------------------------------ messages
    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if self.finished:
            if kind in ("pause", "resume", "cancel"):
                self.acks.append(msg[1])
            elif kind == "grant":
                self.engine.scheduler.release((self.id, msg[1]))
            return
        if kind == "done":
            _, key, attempt, ok, value = msg
            self.tasks.pop(key, None)
            if self.slots:
                self._free_slot(key)
            if not ok:
                value = sizes.bound_error(value)
            elif key not in self.plan.nodes:  # a map item, an undo, a fallback; nodes: _succeeded
                too_large = sizes.output_error("the output", value)
                if too_large is not None:
                    ok, value = False, too_large
            if "[" in key:
                self._item_done(key, attempt, ok, value)
            elif key.endswith(_COMPENSATE):
                self._compensation_done(key, attempt, ok, value)
            elif key.endswith(_FALLBACK):
                self._fallback_done(key, attempt, ok, value)
            else:
                node = self.plan.nodes[key]
                rec = self.records[key]
                if rec.attempt != attempt or rec.state is not NodeState.RUNNING:
                    return  # a late answer from a cancelled attempt
                if ok:
                    self._succeeded(node, rec, value)
                else:
                    self._attempt_failed(node, rec, value)
        elif kind == "retry":
            self._retry_now(msg[1])
        elif kind == "wait_over" and "[" in msg[1]:
            self._item_wait_over(msg[1])
        elif kind == "wait_over":
            _, node_id, timed_out = msg
            rec = self.records.get(node_id)
            if rec is None or rec.state is not NodeState.WAITING:
                return
            self.timers.pop(node_id, None)
            node = self.plan.nodes[node_id]
            self.waits.end(node_id)
            if timed_out:
                self._fail(node, rec, error_dict("timeout", f"wait timed out after {node.wait_timeout}s"))
            else:
                self._succeeded(node, rec, None)
        elif kind == "signal":
            self._signal(msg[1])
        elif kind == "fail":  # a budget refused a call whose budget says on_exhausted: fail
            self._finish(ExecutionState.FAILED, error=msg[1])
        elif kind == "timeout":
            self._finish(
                ExecutionState.TIMED_OUT,
                error={"type": "timeout", "message": f"execution exceeded its timeout of {self.plan.timeout}s"},
            )
        elif kind in ("pause", "resume") and self.saga is not None:
            # Compensating: the saga runs to its end; pause and resume have nothing to act on.
            self.acks.append(msg[1])
        elif kind == "pause":
            if not self.paused:
                self.paused = True
                self._set_exec_state(ExecutionState.PAUSED, msg[2] if len(msg) > 2 and isinstance(msg[2], dict) else None)
            self.acks.append(msg[1])
        elif kind == "resume":
            if self.paused:
                self.paused = False
                resumed = self._resume_paused_nodes(msg[3] if len(msg) > 3 else None)
                self._set_exec_state(ExecutionState.RUNNING, {"resumed_nodes": resumed} if resumed else None)
                for node_id in list(self.maps):
                    self._fill_map(self.plan.nodes[node_id])
            self.acks.append(msg[1])
        elif kind == "cancel":
            error = {"type": "cancelled", "message": "cancelled by request"}
            if msg[2] and self.saga is None:
                self._compensate(error)
            elif self.saga is None:
                self._finish(ExecutionState.CANCELLED, error=error)
            self.acks.append(msg[1])
        elif kind == "grant":
            self._granted(msg[1], msg[2])
        elif kind == "emit":
            _, key, type_, data = msg
            if type_ == "agent.usage" and isinstance(data, dict):
                data = self.engine.budgets.meter((self.id, key), data)
                self._add_usage(key, data)
            self._event(type_, key, sizes.bound_event(type_, data))
        elif kind == "breaker":
            _, name, state = msg
            self._event(f"breaker.{state}", None, {"name": name, "state": state})
        elif kind == "escalation_timeout":
            self._escalation_answer(msg[1], None, timed_out=True)

    # ------------------------------------------------------------- resolving
    def _push_ready(self, node: NodePlan) -> None:
        self._ready_seq += 1
        heapq.heappush(self.ready, (-node.priority, self._ready_seq, node.id))

    def _resolve(self, node_id: str) -> None:
        """All incoming edges of `node_id` are decided: it becomes READY or SKIPPED."""
        node = self.plan.nodes[node_id]
        existing = self.records.get(node_id)
        if existing is not None and existing.state is not NodeState.PENDING:
            return  # restored: it already moved on
        if self._replaying and existing is None and node.incoming:
            # Decided during replay but never recorded: settle it now, like a live run.
            pass
        taken = self.taken.get(node_id, ())
        if node.incoming and (not taken or (node.join_all and len(taken) < len(node.incoming))):
            self._skip(node, "dead_path" if not taken else "join")
            return
        err = self.edge_errors.get(node_id)
        rec = self._node(node_id)
        if node_id in self.edge_inputs:
            mapped = self.edge_inputs.pop(node_id)
            too_large = sizes.node_input_error(mapped)
            if too_large is not None:
                self._set_node(rec, NodeState.READY)
                self._node_failed(node, rec, too_large)
                return
            rec.input = mapped
        if err is not None:
            self._set_node(rec, NodeState.READY)
            self._node_failed(node, rec, error_dict("expression_error", err.message, {"path": err.path}))
            return
        self._set_node(rec, NodeState.READY)
        self._push_ready(node)

    def _skip(self, node: NodePlan, reason: str, output: Any = None) -> None:
        rec = self._node(node.id)
        rec.output = output
        rec.skip_reason = reason
        rec.ended_at = self.engine.clock()
        self._decided(rec)
        self._set_node(rec, NodeState.SKIPPED, {"skip_reason": reason})
        self._decide_edges(node.id, reason == "handler")

    def _decided(self, rec: NodeRecord) -> None:
        self.completed += 1
        rec.completed_order = self.completed
        self.undecided -= 1

    def _decide_edges(self, node_id: str, success: bool) -> None:
        node = self.plan.nodes[node_id]
        act: dict[str, Any] | None = None
        for edge in node.outgoing:
            target = edge.target
            taken = success
            if success:
                if edge.from_switch:
                    taken = self.choice.get(node_id) == target
                if taken and (edge.when is not None or edge.input is not None):
                    if act is None:
                        act = self._activation(
                            (edge.when.names if edge.when else frozenset())
                            | (edge.input.names if edge.input else frozenset()),
                            (edge.when.node_refs if edge.when else frozenset())
                            | (edge.input.node_refs if edge.input else frozenset()),
                            {"output": self.records[node_id].output},
                        )
                    try:
                        if edge.when is not None:
                            value = edge.when.evaluate(act)
                            if not isinstance(value, bool):
                                raise ExpressionError(edge.when.path, f"must yield a bool, got {_typename(value)}")
                            taken = value
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
                self.taken.setdefault(target, []).append(edge)
            self.pending[target] -= 1
            if self.pending[target] == 0:
                self._resolve(target)

    # ---------------------------------------------------------------- running
    def _activation(
        self,
        names: frozenset[str],
        node_refs: frozenset[str],
        extra: dict[str, Any] | None = None,
        attempt: int = 1,
    ) -> dict[str, Any]:
        """What an expression sees; `attempt` is the current node's (from 1) for
        `execution.attempt` in its arguments and output transforms."""
        act: dict[str, Any] = {}
        if "input" in names:
            act["input"] = self.record.input
        if "vars" in names:
            act["vars"] = self.record.vars
        if "nodes" in names:
            views = {}
            for ref in node_refs:
                rec = self.records.get(ref)
                if rec is None:
                    views[ref] = {"output": None, "state": "PENDING", "error": None, "input": None}
                else:
                    views[ref] = {
                        "output": rec.output if rec.state is not NodeState.SKIPPED or rec.skip_reason == "handler" else None,
                        "state": rec.state.value,
                        "error": rec.error,
                        "input": rec.input,
                    }
            act["nodes"] = views
        if "execution" in names:
            act["execution"] = {
                "id": self.id,
                "workflow": self.record.workflow,
                "version": self.record.version,
                "attempt": max(attempt, 1),
                "started_at": _iso(self.record.started_at),
            }
        if "secrets" in names:
            act["secrets"] = self.engine.secrets
        if extra:
            act.update(extra)
        return act

    def _start(self, node: NodePlan) -> None:
        rec = self.records[node.id]
        if rec.state is not NodeState.READY:
            return
        if node.when is not None:
            try:
                ok = node.when.evaluate(self._activation(node.when.names, node.when.node_refs))
                if not isinstance(ok, bool):
                    raise ExpressionError(node.when.path, f"must yield a bool, got {_typename(ok)}")
            except ExpressionError as exc:
                self._node_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
                return
            if not ok:
                self._skip(node, "when")
                return
        kind = node.kind
        if kind == "wait":
            self._start_wait(node, rec)
        elif kind == "map":
            self._start_map(node, rec)
        elif node.inline:
            self._begin_attempt(rec)
            try:
                value = self._inline_value(node, rec)
            except ExpressionError as exc:
                self._attempt_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
                return
            except ToolFailure as exc:
                self._attempt_failed(node, rec, error_dict(exc.type, exc.message, exc.details))
                return
            except Exception as exc:  # a bug here must fail the node, not stop the loop
                log.exception("inline node %s of %s failed unexpectedly", node.id, self.id)
                self._attempt_failed(node, rec, error_dict("internal", f"{type(exc).__name__}: {exc}"))
                return
            self._succeeded(node, rec, value)
        else:
            self._gate(node.id, node, node.step, lambda ticket: self._go(node, rec, ticket))

    def _go(self, node: NodePlan, rec: NodeRecord, ticket: Any) -> None:
        self._begin_attempt(rec, ticket)
        attempt = rec.attempt
        self.to_launch.append((node.id, lambda: self._call(node.id, node, node.step, attempt, None, None)))

    def _gate(self, key: str, node: NodePlan, step: StepPlan | None, go: Callable[[Any], None]) -> None:
        """Starts a call now, or asks the scheduler for a slot when limits or a rate-limit
        bucket apply (the node waits in READY meanwhile)."""
        sched = self.engine.scheduler
        bucket = node.rate_limit or None
        target = "" if step is None else step.tool.name if step.tool is not None else (step.provider.name if step.provider else "")
        if bucket is None and sched.config.bindings:
            bucket = sched.config.bindings.get(target)
        budgets = self.engine.budgets
        covered = budgets.covers(self.record.tenant, self.plan.budget, step)
        claim = budgets.claim((self.id, key), self.record.tenant, self.record.workflow, step) if covered else None
        if not sched.active and bucket is None and claim is None:
            go(None)
            return
        self.gated[key] = go
        sched.request(
            (self.id, key),
            tenant=self.record.tenant,
            workflow=self.record.workflow,
            execution_priority=self.record.priority,
            node_priority=node.priority,
            bucket=bucket,
            grant=lambda ticket, k=key: self._post(("grant", k, ticket)),
            target=target,
            claim=claim,
        )

    def _granted(self, key: str, ticket: Any) -> None:
        go = self.gated.pop(key, None)
        sched = self.engine.scheduler
        if go is None:
            sched.release((self.id, key))
            return
        if "[" not in key:
            rec = self.records.get(key)
            if rec is None or rec.state is not NodeState.READY:
                sched.release((self.id, key))
                return
            if self.paused or self.engine.draining:
                # Hand the slot back; the node starts again from the ready queue on resume.
                sched.release((self.id, key))
                self._push_ready(self.plan.nodes[key])
                return
        self.slots.add(key)
        go(ticket)

    def _free_slot(self, key: str) -> None:
        if key in self.slots:
            self.slots.discard(key)
            self.engine.scheduler.release((self.id, key))

    def _begin_attempt(self, rec: NodeRecord, ticket: Any = None) -> None:
        rec.attempt += 1
        rec.wake_at = None
        if rec.started_at is None:
            rec.started_at = self.engine.clock()
        data: dict[str, Any] = {"attempt": rec.attempt}
        if ticket is not None:
            data["queued_seconds"] = round(self.engine.scheduler._clock() - ticket.enqueued_at, 6)
            if ticket.throttled:
                data["rate_limited"] = True
        self._set_node(rec, NodeState.RUNNING, data)

    def _inline_value(self, node: NodePlan, rec: NodeRecord) -> Any:
        if node.kind == "pass":
            t = node.step.value
            if t.is_constant:
                return t.constant
            return t.evaluate(self._activation(node.names, node.node_refs, attempt=rec.attempt))
        if node.kind == "switch":
            act = self._activation(node.names, node.node_refs)
            for case in node.cases:
                value = case.when.evaluate(act)
                if not isinstance(value, bool):
                    raise ExpressionError(case.when.path, f"must yield a bool, got {_typename(value)}")
                if value:
                    self.choice[node.id] = case.target
                    return case.target
            if node.default:
                self.choice[node.id] = node.default
                return node.default
            raise ToolFailure("no_choice_matched", f"no case of switch {node.id!r} matched and it has no default")
        if node.kind == "aggregate":
            return self._aggregate(node)
        raise AssertionError(node.kind)

    def _aggregate(self, node: NodePlan) -> Any:
        order = {nid: i for i, nid in enumerate(e.source for e in node.incoming)}
        sources = sorted({e.source for e in self.taken.get(node.id, ())}, key=order.__getitem__)
        outputs = [self.records[s].output for s in sources]
        strategy = node.strategy
        if strategy == "merge":
            merged: dict[str, Any] = {}
            for out in outputs:
                if out is None:
                    continue
                if not isinstance(out, dict):
                    raise ToolFailure("tool_error", f"merge needs objects, got {_typename(out)}")
                _deep_merge(merged, out)
            return merged
        if strategy == "concat":
            result: list[Any] = []
            for out in outputs:
                if out is None:
                    continue
                if not isinstance(out, list):
                    raise ToolFailure("tool_error", f"concat needs lists, got {_typename(out)}")
                result.extend(out)
            return result
        if strategy == "first":
            return outputs[0] if outputs else None
        if strategy == "vote":
            best, count = None, 0
            tallies: list[tuple[Any, int]] = []
            for out in outputs:
                for i, (value, n) in enumerate(tallies):
                    if value == out:
                        tallies[i] = (value, n + 1)
                        break
                else:
                    tallies.append((out, 1))
            for value, n in tallies:
                if n > count:
                    best, count = value, n
            return best
        act = self._activation(node.names, node.node_refs, {"outputs": outputs})
        return node.expr.evaluate(act)

    async def _call(
        self,
        key: str,
        node: NodePlan,
        step: StepPlan,
        attempt: int,
        item: Any,
        index: int | None,
        extra: dict[str, Any] | None = None,
        suffix: str = "",
    ) -> None:
        """One attempt of a tool, agent or workflow call (`invoke_step`); posts its outcome
        to the loop."""
        timeout = node.timeout if step.timeout is None else step.timeout
        if index is not None:
            extra = {"item": item, "index": index}
        ctx = CallContext(
            execution_id=self.id,
            node_id=node.id,
            attempt=attempt,
            idempotency_key=f"{self.id}/{node.id}" + (f"/{index}" if index is not None else "") + suffix,
            tenant=self.record.tenant,
            secrets=self.engine.secrets,
            emit=lambda type_, data, k=key: self._post(("emit", k, type_, data)),
        )

        try:
            act = self._activation(node.names, node.node_refs, extra, attempt)
        except ExpressionError as exc:
            self._post(("done", key, attempt, False, error_dict("expression_error", exc.message, {"path": exc.path})))
            return

        instr = self.engine.instrumentation
        ok, value = await invoke_step(
            step,
            lambda: self._invoke(step, act, ctx, key, attempt),
            attempt=attempt,
            timeout=timeout,
            breaker=breaker_for(step, self.engine.breakers, self.plan.breakers),
            clock=self.engine.clock,
            on_breaker=lambda name, state: self._post(("breaker", name, state)),
            span=(lambda: instr.attempt(self.record, key, step.kind, attempt, target_of(step)))
            if instr is not None
            else None,
            where=f"node {key} of {self.id}",
        )
        self._post(("done", key, attempt, ok, value))

    async def _invoke(self, step: StepPlan, act: dict[str, Any], ctx: CallContext, key: str, attempt: int) -> Any:
        given, args = self._override(key)
        if step.kind == "tool":
            return await call_tool(step, args if given else step.args.evaluate(act), ctx)
        if step.kind == "agent":
            return await call_agent(step, lambda t: t.evaluate(act), ctx)
        if step.kind == "pass":
            return step.value.evaluate(act)
        if step.kind == "workflow":
            child_input = args if given else step.workflow_input.evaluate(act) if step.workflow_input else {}
            return await self.engine._run_child(self, key, attempt, step, child_input)
        raise AssertionError(step.kind)

    # ----------------------------------------------------------- outcomes
    def _succeeded(self, node: NodePlan, rec: NodeRecord, raw: Any) -> None:
        output = raw
        try:
            if node.output is not None:
                output = node.output.evaluate(
                    self._activation(node.output.names, node.output.node_refs, {"output": raw}, rec.attempt)
                )
            too_large = sizes.output_error("the output", output)
            if too_large is not None:
                self._node_failed(node, rec, too_large)
                return
            if node.export:
                act = None
                new_vars = self.record.vars
                for key, t in node.export.items():
                    if act is None:
                        names = frozenset().union(*(x.names for x in node.export.values()))
                        refs = frozenset().union(*(x.node_refs for x in node.export.values()))
                        act = self._activation(names, refs, {"output": output}, rec.attempt)
                    # Copy on write: a committed record may share the old dict.
                    new_vars = {**new_vars, key: t.evaluate(act)}
                too_large = sizes.output_error("the variables (vars) with this node's export", new_vars)
                if too_large is not None:
                    self._node_failed(node, rec, too_large)
                    return
                self.record.vars = new_vars
                self.batch.execution = self.record
        except ExpressionError as exc:
            self._node_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
            return
        rec.output = output
        rec.error = None
        rec.ended_at = self.engine.clock()
        self._decided(rec)
        self._set_node(rec, NodeState.SUCCEEDED, {"attempt": rec.attempt, "output": output})
        self._decide_edges(node.id, True)

    def _attempt_failed(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        rec.error = err
        # After a resume from `on_exhausted: pause` the policy counts attempts afresh.
        counted = rec.attempt - (rec.exhausted or {}).get("base", 0)
        delay = next_retry(self._policy(node, err["type"]), node.step, counted, err, self.engine.rng)
        if node.on_exhausted == "pause" and err["type"] == "circuit_open":
            delay = None  # retrying into an open breaker only spends attempts: pause at once
        if delay is not None:
            if node.total_timeout is None or (
                self.engine.clock() + delay - (rec.started_at or 0) < node.total_timeout
            ):
                rec.wake_at = self.engine.clock() + delay
                self._set_node(rec, NodeState.RETRYING, {"attempt": rec.attempt, "error": err, "delay": delay})
                self.retrying.add(node.id)
                self._arm_timer(node.id, delay, self._retry_due)
                return
        self._fail(node, rec, err)

    def _policy(self, node: NodePlan, error_type: str) -> RetrySpec:
        """A matching `retry` handler replaces the node's policy for the errors it matches;
        an irreversible tool is never retried automatically."""
        if self.plan.handlers:
            handler = self.plan.handler_for(node.id, error_type)
            if handler is not None and handler.action == "retry" and not node.irreversible:
                return handler.retry
        return node.retry

    def _fail(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """The node's retries are spent: the first matching handler decides, else the
        execution fails."""
        handler = self.plan.handler_for(node.id, err["type"]) if self.plan.handlers else None
        if (handler is None or handler.action == "retry") and node.on_exhausted == "pause" and err["type"] != "cancelled":
            self._pause_on(node, rec, err)
        elif handler is None or handler.action == "retry":
            self._node_failed(node, rec, err)
        elif handler.action == "skip":
            rec.error = err
            try:
                output = handler.output.evaluate(
                    self._activation(handler.output.names, handler.output.node_refs)
                ) if handler.output is not None else None
            except ExpressionError as exc:
                self._node_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
                return
            self._skip(node, "handler", output)
        elif handler.action == "fallback":
            self._start_fallback(node, rec, handler, err)
        elif handler.action == "compensate":
            rec.error = err
            rec.ended_at = self.engine.clock()
            self._decided(rec)
            self._set_node(rec, NodeState.FAILED, {"attempt": rec.attempt, "error": err})
            self._compensate(dict(err, node=node.id))
        else:
            self._escalate(node, rec, handler, err)

    # ------------------------------------------------- on_exhausted: pause
    def _pause_on(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        """Pauses the execution on `node` instead of failing it: the node waits in READY
        with its error (stored, so a restart finds it paused there) until an operator
        resumes the execution."""
        rec.error = err
        rec.exhausted = {"paused": True, "attempt": rec.attempt}
        self._set_node(rec, NodeState.READY, {"attempt": rec.attempt, "error": err, "paused": True})
        self._push_ready(node)
        self.paused_on.add(node.id)
        if self.record.error is None:
            self.record.error = dict(err, node=node.id)
            self.batch.execution = self.record
        if not self.paused:
            self.paused = True
            self._set_exec_state(ExecutionState.PAUSED, {"reason": "node_exhausted", "node": node.id, "error": err})

    def _resume_paused_nodes(self, override: dict[str, Any] | None) -> list[str]:
        """On resume: each node paused on starts over with a fresh attempt count (and its
        total_timeout from now); `override` {node, args} gives one its next arguments."""
        resumed = sorted(self.paused_on)
        for node_id in resumed:
            rec = self.records[node_id]
            rec.exhausted = {"base": rec.attempt}
            if override is not None and override.get("node") == node_id and "args" in override:
                rec.exhausted["args"] = override["args"]
            rec.started_at = self.engine.clock()
            self._dirty[node_id] = rec
        self.paused_on.clear()
        if resumed and self.record.error is not None:
            self.record.error = None
            self.batch.execution = self.record
        return resumed

    def _override(self, key: str) -> tuple[bool, Any]:
        """The arguments an operator gave a resumed node (ResumeExecution with args)."""
        rec = self.records.get(key)
        if rec is not None and rec.exhausted is not None and "args" in rec.exhausted:
            return True, rec.exhausted["args"]
        return False, None

    # ------------------------------------------------------------ fallback
    def _start_fallback(self, node: NodePlan, rec: NodeRecord, handler: HandlerPlan, err: dict[str, Any]) -> None:
        key = node.id + _FALLBACK
        frec = self._items.get(key)
        if frec is None:
            frec = self._items[key] = NodeRecord(self.id, key, NodeState.PENDING)
        frec.attempt += 1
        frec.started_at = self.engine.clock()
        rec.error = err
        self._set_node(frec, NodeState.RUNNING, {"attempt": frec.attempt, "replaces_error": err})
        attempt = frec.attempt
        step = handler.fallback
        self.to_launch.append((key, lambda: self._call(key, node, step, attempt, None, None)))

    def _fallback_done(self, key: str, attempt: int, ok: bool, value: Any) -> None:
        frec = self._items.get(key)
        node = self.plan.nodes[key[: -len(_FALLBACK)]]
        rec = self.records[node.id]
        if frec is None or frec.attempt != attempt or frec.state is not NodeState.RUNNING:
            return
        frec.ended_at = self.engine.clock()
        if ok:
            frec.output = value
            self._set_node(frec, NodeState.SUCCEEDED, {"attempt": attempt})
            self._succeeded(node, rec, value)
        else:
            frec.error = value
            self._set_node(frec, NodeState.FAILED, {"attempt": attempt, "error": value})
            # A failing fallback fails the node; handlers are not consulted again.
            self._node_failed(node, rec, value)

    # ---------------------------------------------------------- escalation
    def _escalate(self, node: NodePlan, rec: NodeRecord, handler: HandlerPlan, err: dict[str, Any]) -> None:
        rec.error = err
        self.escalated[node.id] = handler
        rec.wake_at = self.engine.clock() + handler.timeout if handler.timeout else None
        self._set_node(rec, NodeState.ESCALATED, {"attempt": rec.attempt, "error": err})
        if handler.timeout:
            self._arm_timer(node.id, handler.timeout, self._escalation_timed_out)

    def _escalation_timed_out(self, node_id: str) -> None:
        self._post(("escalation_timeout", node_id))

    def _escalation_answer(self, node_id: str, data: Any, *, timed_out: bool = False) -> bool:
        handler = self.escalated.pop(node_id, None)
        if handler is None:
            return False
        handle = self.timers.pop(node_id, None)
        if handle is not None:
            handle.cancel()
        node, rec = self.plan.nodes[node_id], self.records[node_id]
        action = handler.on_timeout if timed_out else data.get("action")
        if action == "retry":
            rec.wake_at = None
            self._set_node(rec, NodeState.READY, {"attempt": rec.attempt + 1, "escalation": "retry"})
            self._push_ready(node)
        elif action == "skip":
            output = None if timed_out else data.get("output")
            self._skip(node, "handler", output)
        else:
            err = dict(rec.error or {}) if not timed_out else error_dict(
                "timeout", f"escalation of {node_id!r} got no answer in {handler.timeout}s"
            )
            self._node_failed(node, rec, err)
        return True

    def _retry_due(self, node_id: str) -> None:
        self._post(("retry", node_id))

    def _retry_now(self, key: str) -> None:
        self.timers.pop(key, None)
        if "[" in key:
            self._item_retry(key)
            return
        if key.endswith(_COMPENSATE):
            node_id = key[: -len(_COMPENSATE)]
            if self.saga is not None and node_id in self.saga_running:
                self._launch_compensation(node_id)
            return
        self.retrying.discard(key)
        rec = self.records.get(key)
        if rec is None or rec.state is not NodeState.RETRYING:
            return
        self._set_node(rec, NodeState.READY, {"attempt": rec.attempt + 1})
        self._push_ready(self.plan.nodes[key])

    def _node_failed(self, node: NodePlan, rec: NodeRecord, err: dict[str, Any]) -> None:
        rec.error = err
        rec.ended_at = self.engine.clock()
        self._decided(rec)
        self._set_node(rec, NodeState.FAILED, {"attempt": rec.attempt, "error": err})
        error = dict(err)
        error["node"] = node.id
        self._finish(ExecutionState.FAILED, error=error)

    def _arm_timer(self, key: str, delay: float, callback: Callable[[str], None]) -> None:
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        self.timers[key] = asyncio.get_running_loop().call_later(max(0.0, delay), callback, key)

    # -------------------------------------------------------------- waits
    def _start_wait(self, node: NodePlan, rec: NodeRecord) -> None:
        now = self.engine.clock()
        if rec.started_at is None:
            rec.started_at = now
        rec.attempt += 1
        if node.signal:
            wait, data = self.waits.begin(node.id, rec.attempt, node.signal, node.wait_schema, now)
            rec.wait = wait
            if node.wait_timeout:
                rec.wake_at = now + node.wait_timeout
                data["timeout_at"] = _iso(rec.wake_at)
            self._set_node(rec, NodeState.WAITING, data)
            self._take_buffered(node.id)
            if node.id in self.waits and node.wait_timeout:
                self._arm_timer(node.id, node.wait_timeout, self._wait_timed_out)
            return
        if node.duration is not None:
            wake = now + node.duration
        else:
            try:
                wake = _parse_time(node.until.evaluate(self._activation(node.names, node.node_refs)))
            except (ExpressionError, ValueError) as exc:
                path = getattr(exc, "path", node.path + ".wait.until")
                self._node_failed(node, rec, error_dict("expression_error", str(exc), {"path": path}))
                return
        rec.wake_at = wake
        if node.wait_timeout and node.wait_timeout < wake - now:
            rec.wake_at = now + node.wait_timeout
            self._arm_timer(node.id, node.wait_timeout, self._wait_timed_out)
        else:
            self._arm_timer(node.id, wake - now, self._wait_elapsed)
        self._set_node(rec, NodeState.WAITING, {"wake_at": _iso(rec.wake_at)})

    def _restore_wait(self, node: NodePlan, rec: NodeRecord) -> None:
        now = self.engine.clock()
        if node.signal:
            self._resume_wait(node.id, rec, node.signal, node.wait_schema)
            if node.id in self.waits and rec.wake_at is not None:
                self._arm_timer(node.id, rec.wake_at - now, self._wait_timed_out)
        elif rec.wake_at is not None:
            timed_out = bool(node.wait_timeout) and (
                node.duration is None or node.wait_timeout < node.duration
            ) and node.until is None
            self._arm_timer(node.id, rec.wake_at - now, self._wait_timed_out if timed_out else self._wait_elapsed)

    def _resume_wait(self, key: str, rec: NodeRecord, signal: str, schema: dict[str, Any] | None) -> None:
        """A wait pending at a restart waits again under its id (one stored before waits had
        ids gets one now), and takes an answer stored before the crash."""
        if rec.wait is None:
            rec.wait, _ = self.waits.begin(key, rec.attempt, signal, schema, rec.started_at or self.engine.clock())
            self._dirty[rec.node_id] = rec
        else:
            self.waits.resume(key, rec.wait, schema)
        self._take_buffered(key)

    def _take_buffered(self, key: str) -> None:
        """The wait of `key` just began or resumed: a kept signal for it ends it now."""
        taken, refused = self.waits.take_buffered(key, self.buffered)
        for sig in refused:
            self.buffered.remove(sig)
            self._refuse(sig, "the data does not match the wait's schema")
        if taken is not None:
            self.buffered.remove(taken)
            self._answered(key, taken)

    def _refuse_stale_answers(self) -> None:
        """After a restore, pending waits took their answers: the answers left are to waits
        that ended, and are refused (an answer never waits for a later wait)."""
        for sig in [s for s in self.buffered if s.signal_id.startswith(ANSWER_PREFIX)]:
            self.buffered.remove(sig)
            self._refuse(sig, "the wait is not pending")

    def _wait_elapsed(self, node_id: str) -> None:
        self._post(("wait_over", node_id, False))

    def _wait_timed_out(self, node_id: str) -> None:
        self._post(("wait_over", node_id, True))

    def _signal(self, sig: SignalRecord) -> None:
        if sig.seq in self.seen_signals:
            return
        self.seen_signals.add(sig.seq)
        if sig.name == CONTROL_SIGNAL:
            self.batch.consumed_signals.append((self.id, sig.seq, "agentrun.control"))
            data = sig.data if isinstance(sig.data, dict) else {}
            fut = asyncio.get_running_loop().create_future()
            self._handle((data.get("action", ""), fut, bool(data.get("compensate")), data.get("override")))
            return
        if sig.name == ESCALATION_SIGNAL and self.escalated:
            data = sig.data if isinstance(sig.data, dict) else {"action": sig.data}
            target = data.get("node") or next(iter(self.escalated))
            if data.get("action") in ("retry", "skip", "fail") and target in self.escalated:
                self._event("signal.received", None, {"signal": sig.name, "signal_id": sig.signal_id, "data": sig.data})
                self.batch.consumed_signals.append((self.id, sig.seq, target))
                self._escalation_answer(target, data)
                return
        route = self.waits.route(sig)
        if route.refusal is not None:
            self._refuse(sig, route.refusal)
        elif route.key is None:
            self._event("signal.received", None, {"signal": sig.name, "signal_id": sig.signal_id, "data": sig.data})
            self.buffered.append(sig)
        else:
            self._answered(route.key, sig)

    def _answered(self, key: str, sig: SignalRecord) -> None:
        """`sig` answers the pending wait of `key` (a wait node or a map item): consumed by it,
        its data the output."""
        wait_id = (self.records.get(key) or self._items[key]).wait["id"]  # type: ignore[index]
        self.waits.end(key)
        self._event("signal.received", None, {"signal": sig.name, "signal_id": sig.signal_id, "data": sig.data, "wait_id": wait_id})
        self.batch.consumed_signals.append((self.id, sig.seq, key))
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        if "[" in key:
            self._item_done(key, self._items[key].attempt, True, sig.data)
            return
        self._succeeded(self.plan.nodes[key], self.records[key], sig.data)

    def _refuse(self, sig: SignalRecord, reason: str) -> None:
        """Marks `sig` refused (consumed by no wait): an answer to a wait that ended, or data
        a wait's schema refuses."""
        self._event("signal.refused", None, {"signal": sig.name, "signal_id": sig.signal_id, "reason": reason})
        self.batch.consumed_signals.append((self.id, sig.seq, REFUSED_PREFIX + reason[:200]))

    # --------------------------------------------------------------- maps
    def _start_map(self, node: NodePlan, rec: NodeRecord) -> None:
        self._begin_attempt(rec)
        try:
            items = node.items.evaluate(self._activation(node.names, node.node_refs))
        except ExpressionError as exc:
            self._node_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
            return
        if not isinstance(items, list):
            self._node_failed(
                node, rec, error_dict("expression_error", f"items must be a list, got {_typename(items)}", {"path": node.items.path})
            )
            return
        if not items:
            self._succeeded(node, rec, [])
            return
        self.maps[node.id] = _MapState(
            items=items, results=[None] * len(items), queue=deque(range(len(items))), remaining=len(items)
        )
        self._fill_map(node)

    def _restore_map(self, node: NodePlan, rec: NodeRecord) -> None:
        try:
            items = node.items.evaluate(self._activation(node.names, node.node_refs))
        except ExpressionError as exc:
            self._node_failed(node, rec, error_dict("expression_error", exc.message, {"path": exc.path}))
            return
        state = _MapState(items=items, results=[None] * len(items), queue=deque(), remaining=len(items))
        restored = self._items_restored.get(node.id, {})
        waiting = []
        for i in range(len(items)):
            irec = restored.get(i)
            if irec is not None and irec.state is NodeState.SUCCEEDED:
                state.results[i] = irec.output
                state.remaining -= 1
                continue
            if irec is not None and irec.state is NodeState.WAITING and node.body.kind == "wait":
                # Its wait goes on under the same id (an answer may already be stored).
                self._items[f"{node.id}[{i}]"] = irec
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
                        self._node_failed(node, rec, error_dict(
                            "internal", "the attempt was interrupted by a restart", {"index": i}))
                        return
                self._items[f"{node.id}[{i}]"] = irec
        self.maps[node.id] = state
        if state.remaining == 0:
            self._map_finished(node)
            return
        for i in waiting:
            if node.id in self.maps:
                self._resume_item_wait(node, i)
        if node.id in self.maps:
            self._fill_map(node)

    def _fill_map(self, node: NodePlan) -> None:
        if self.paused or self.engine.draining:
            return  # queued items wait for resume, which refills every map
        state = self.maps[node.id]
        limit = node.max_concurrency or len(state.items)
        while state.running < limit and state.queue:
            self._launch_item(node, state.queue.popleft())

    def _launch_item(self, node: NodePlan, index: int) -> None:
        state = self.maps[node.id]
        state.running += 1
        if node.body.kind == "wait":
            self._item_wait(node, index)
            return
        self._gate(f"{node.id}[{index}]", node, node.body, lambda ticket: self._item_go(node, index, ticket))

    def _item_go(self, node: NodePlan, index: int, ticket: Any) -> None:
        state = self.maps.get(node.id)
        key = f"{node.id}[{index}]"
        if state is None:
            self._free_slot(key)
            return
        items = self._items
        irec = items.get(key)
        if irec is None:
            irec = items[key] = NodeRecord(self.id, key, NodeState.PENDING)
        irec.attempt += 1
        if irec.started_at is None:
            irec.started_at = self.engine.clock()
        irec.wake_at = None
        data: dict[str, Any] = {"attempt": irec.attempt, "index": index}
        if ticket is not None and ticket.throttled:
            data["rate_limited"] = True
        self._set_node(irec, NodeState.RUNNING, data)
        attempt = irec.attempt
        item = state.items[index]
        self.to_launch.append((key, lambda: self._call(key, node, node.body, attempt, item, index)))

    def _item_wait(self, node: NodePlan, index: int) -> None:
        """A map item whose body is a wait: it waits for its own answer (no scheduler slot)."""
        key = f"{node.id}[{index}]"
        irec = self._items.get(key)
        if irec is None:
            irec = self._items[key] = NodeRecord(self.id, key, NodeState.PENDING)
        now = self.engine.clock()
        irec.attempt += 1
        if irec.started_at is None:
            irec.started_at = now
        body = node.body
        irec.wait, data = self.waits.begin(key, irec.attempt, body.signal, body.wait_schema, now)
        irec.wake_at = now + body.timeout if body.timeout else None
        if irec.wake_at is not None:
            data["timeout_at"] = _iso(irec.wake_at)
        self.maps[node.id].waiting.add(index)
        self._set_node(irec, NodeState.WAITING, {**data, "attempt": irec.attempt, "index": index})
        self._take_buffered(key)
        if key in self.waits and body.timeout:
            self._arm_timer(key, body.timeout, self._wait_timed_out)

    def _resume_item_wait(self, node: NodePlan, index: int) -> None:
        key = f"{node.id}[{index}]"
        irec = self._items[key]
        self._resume_wait(key, irec, node.body.signal, node.body.wait_schema)
        if key in self.waits and irec.wake_at is not None:
            self._arm_timer(key, irec.wake_at - self.engine.clock(), self._wait_timed_out)

    def _item_wait_over(self, key: str) -> None:
        """A map item's wait timed out: a failed attempt of the item (its retry policy says
        whether it waits again, under a new wait id)."""
        irec = self._items.get(key)
        if irec is None or irec.state is not NodeState.WAITING or key not in self.waits:
            return
        self.timers.pop(key, None)
        self.waits.end(key)
        timeout = self.plan.nodes[key.split("[", 1)[0]].body.timeout
        self._item_done(key, irec.attempt, False, error_dict("timeout", f"wait timed out after {timeout}s"))

    def _item_done(self, key: str, attempt: int, ok: bool, value: Any) -> None:
        node_id, index = key.split("[", 1)
        index_n = int(index[:-1])
        irec = self._items.get(key)
        state = self.maps.get(node_id)
        if irec is None or state is None or irec.attempt != attempt or irec.state not in (NodeState.RUNNING, NodeState.WAITING):
            return
        node = self.plan.nodes[node_id]
        state.running -= 1
        state.waiting.discard(index_n)
        if ok:
            irec.output = value
            irec.ended_at = self.engine.clock()
            self._set_node(irec, NodeState.SUCCEEDED, {"attempt": attempt, "index": index_n})
            state.results[index_n] = value
            state.remaining -= 1
            if state.remaining == 0:
                self._map_finished(node)
            else:
                self._fill_map(node)
            return
        irec.error = value
        policy = node.body.retry or self._policy(node, value["type"])
        delay = next_retry(policy, node.body, attempt, value, self.engine.rng)
        if delay is not None:
            irec.wake_at = self.engine.clock() + delay
            self._set_node(irec, NodeState.RETRYING, {"attempt": attempt, "error": value, "delay": delay, "index": index_n})
            state.retrying.add(index_n)
            self._arm_timer(key, delay, self._retry_due)
            return
        irec.ended_at = self.engine.clock()
        self._set_node(irec, NodeState.FAILED, {"attempt": attempt, "error": value, "index": index_n})
        rec = self.records[node_id]
        self._cancel_items(node_id)
        err = dict(value)
        err["details"] = dict(err.get("details") or {}, index=index_n)
        self._fail(node, rec, err)

    def _item_retry(self, key: str) -> None:
        node_id, index = key.split("[", 1)
        index_n = int(index[:-1])
        state = self.maps.get(node_id)
        if state is None or index_n not in state.retrying:
            return
        state.retrying.discard(index_n)
        if self.paused or self.engine.draining:
            state.queue.appendleft(index_n)  # retried on resume
            return
        self._launch_item(self.plan.nodes[node_id], index_n)

    def _map_finished(self, node: NodePlan) -> None:
        state = self.maps.pop(node.id)
        self._succeeded(node, self.records[node.id], state.results)

    def _cancel_items(self, node_id: str) -> None:
        prefix = f"{node_id}["
        for key in [k for k in self.tasks if k.startswith(prefix)]:
            self.tasks.pop(key).cancel()
            irec = self._items[key]
            if irec.state is NodeState.RUNNING:
                irec.ended_at = self.engine.clock()
                self._set_node(irec, NodeState.CANCELLED, {"attempt": irec.attempt})
        for key in [k for k in self.waits.pending_keys() if k.startswith(prefix)]:
            self.waits.end(key)
            irec = self._items[key]
            if irec.state is NodeState.WAITING:
                irec.ended_at = self.engine.clock()
                self._set_node(irec, NodeState.CANCELLED, {"attempt": irec.attempt})
        for key in [k for k in self.timers if k.startswith(prefix)]:
            self.timers.pop(key).cancel()
        for key in [k for k in self.gated if k.startswith(prefix)]:
            del self.gated[key]
            self.engine.scheduler.release((self.id, key))
        for key in [k for k in self.slots if k.startswith(prefix)]:
            self._free_slot(key)
        self.maps.pop(node_id, None)

    # ---------------------------------------------------------------- saga
    def _compensate(self, error: dict[str, Any]) -> None:
        """Stops the forward run and undoes every succeeded node that has `compensate`."""
        self.record.error = error
        self._cancel_all(detach=False)
        self.escalated.clear()
        self._set_exec_state(ExecutionState.COMPENSATING, {"error": error})
        done = sorted(
            (r for r in self.records.values()
             if r.state is NodeState.SUCCEEDED and self.plan.nodes[r.node_id].compensate is not None),
            key=lambda r: r.completed_order,
        )
        if self.plan.compensation == "reverse":
            done.reverse()
        self.saga = deque(r.node_id for r in done)
        self._saga_next()

    def _saga_next(self) -> None:
        parallel = self.plan.compensation == "parallel"
        while self.saga and (parallel or not self.saga_running):
            self._launch_compensation(self.saga.popleft())
        if self.saga or self.saga_running or self.finished:
            return
        error = dict(self.record.error or {})
        error["details"] = dict(
            error.get("details") or {}, compensated=list(self.saga_done), not_compensated=list(self.saga_failed)
        )
        self._finish(
            ExecutionState.COMPENSATION_FAILED if self.saga_failed else ExecutionState.COMPENSATED, error=error
        )

    def _launch_compensation(self, node_id: str) -> None:
        node, rec = self.plan.nodes[node_id], self.records[node_id]
        key = node_id + _COMPENSATE
        crec = self._items.get(key)
        if crec is None:
            crec = self._items[key] = NodeRecord(self.id, key, NodeState.PENDING)
        crec.attempt += 1
        crec.wake_at = None
        if crec.started_at is None:
            crec.started_at = self.engine.clock()
        self.saga_running.add(node_id)
        if rec.state is not NodeState.COMPENSATING:
            self._set_node(rec, NodeState.COMPENSATING, {"attempt": rec.attempt})
        self._set_node(crec, NodeState.RUNNING, {"attempt": crec.attempt})
        attempt, step, output = crec.attempt, node.compensate, rec.output
        self.to_launch.append(
            (key, lambda: self._call(key, node, step, attempt, None, None, {"output": output}, "/compensate"))
        )

    def _compensation_done(self, key: str, attempt: int, ok: bool, value: Any) -> None:
        node_id = key[: -len(_COMPENSATE)]
        crec = self._items.get(key)
        if crec is None or crec.attempt != attempt or crec.state is not NodeState.RUNNING:
            return
        node, rec = self.plan.nodes[node_id], self.records[node_id]
        if ok:
            crec.output = value
            crec.ended_at = rec.ended_at = self.engine.clock()
            self._set_node(crec, NodeState.SUCCEEDED, {"attempt": attempt, "output": value})
            self._set_node(rec, NodeState.COMPENSATED, {"attempt": rec.attempt})
            self.saga_done.append(node_id)
        else:
            crec.error = value
            policy = node.compensate.retry or NO_RETRY
            delay = next_retry(policy, node.compensate, attempt, value, self.engine.rng)
            if delay is not None:
                crec.wake_at = self.engine.clock() + delay
                self._set_node(crec, NodeState.RETRYING, {"attempt": attempt, "error": value, "delay": delay})
                self._arm_timer(key, delay, self._retry_due)
                return
            crec.ended_at = self.engine.clock()
            self._set_node(crec, NodeState.FAILED, {"attempt": attempt, "error": value})
            self._set_node(rec, NodeState.COMPENSATION_FAILED, {"attempt": rec.attempt, "error": value})
            self.saga_failed.append(node_id)
        self.saga_running.discard(node_id)
        self._saga_next()

    def _restore_saga(self) -> None:
        """Continues a compensation cut short by a restart; a compensation whose completion
        was committed does not run again, one in flight runs again with the same key."""
        self.saga = deque()
        ordered = sorted(
            (r for r in self.records.values() if r.node_id in self.plan.nodes
             and self.plan.nodes[r.node_id].compensate is not None),
            key=lambda r: r.completed_order,
        )
        if self.plan.compensation == "reverse":
            ordered.reverse()
        now = self.engine.clock()
        for rec in ordered:
            key = rec.node_id + _COMPENSATE
            crec = self._items.get(key)
            if rec.state is NodeState.COMPENSATED:
                self.saga_done.append(rec.node_id)
            elif rec.state is NodeState.COMPENSATION_FAILED:
                self.saga_failed.append(rec.node_id)
            elif rec.state is NodeState.COMPENSATING and crec is not None and crec.state is NodeState.RETRYING:
                self.saga_running.add(rec.node_id)
                self._arm_timer(key, max(0.0, (crec.wake_at or now) - now), self._retry_due)
            elif rec.state is NodeState.COMPENSATING:
                if crec is not None:
                    crec.attempt -= 1  # the interrupted attempt is run again, not counted
                self._launch_compensation(rec.node_id)
            elif rec.state is NodeState.SUCCEEDED:
                self.saga.append(rec.node_id)
        self._saga_next()

    # ------------------------------------------------------------ endings
    def _succeed(self) -> None:
        plan = self.plan
        try:
            if plan.output is not None:
                output = plan.output.evaluate(
                    self._activation(plan.output.names, plan.output.node_refs)
                )
            else:
                output = {
                    nid: self.records[nid].output
                    for nid, node in plan.nodes.items()
                    if node.sink and self.records.get(nid) is not None
                    and self.records[nid].state is NodeState.SUCCEEDED
                }
        except ExpressionError as exc:
            self._finish(
                ExecutionState.FAILED,
                error={"type": "expression_error", "message": exc.message, "details": {"path": exc.path}},
            )
            return
        too_large = sizes.output_error("the execution's output", output)
        if too_large is not None:
            self._finish(ExecutionState.FAILED, error=too_large)
            return
        self.record.output = output
        self._finish(ExecutionState.SUCCEEDED)

    def _finish(self, state: ExecutionState, error: dict[str, Any] | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_all(detach=False)
        self.record.error = error
        self.record.ended_at = self.engine.clock()
        self._set_exec_state(state, {"error": error} if error else {"output": self.record.output})

    def _cancel_all(self, *, detach: bool) -> None:
        """Cancels running calls and timers; unless detaching (shutdown), records it."""
        for key, task in list(self.tasks.items()):
            task.cancel()
            if detach:
                continue
            rec = self.records.get(key) or self._items.get(key)
            if rec is not None and rec.state is NodeState.RUNNING:
                rec.ended_at = self.engine.clock()
                self._set_node(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
        self.tasks.clear()
        # Calls begun in this turn but not launched yet (the loop launches after its commit).
        for key, _ in self.to_launch:
            rec = self.records.get(key) or self._items.get(key)
            if not detach and rec is not None and rec.state is NodeState.RUNNING:
                rec.ended_at = self.engine.clock()
                self._set_node(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
        self.to_launch.clear()
        sched = self.engine.scheduler
        for key in list(self.gated) + list(self.slots):
            sched.release((self.id, key))
        self.gated.clear()
        self.slots.clear()
        for key, handle in list(self.timers.items()):
            handle.cancel()
            if detach:
                continue
            rec = self.records.get(key)
            if rec is not None and rec.state in (NodeState.RETRYING, NodeState.WAITING):
                rec.ended_at = self.engine.clock()
                self._set_node(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
        self.timers.clear()
        self.retrying.clear()
        if not detach:
            self.maps.clear()  # no queued item may start once the forward run stopped
            for _, _, nid in self.ready:
                rec = self.records[nid]
                if rec.state is NodeState.READY:
                    self._set_node(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
            self.ready.clear()
            for key in self.waits.pending_keys():
                rec = self.records.get(key) or self._items.get(key)
                if rec is not None and rec.state is NodeState.WAITING:
                    self._set_node(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
                self.waits.end(key)


def _summed(total: dict[str, float] | None, more: dict[str, float]) -> dict[str, float]:
    out = dict(total or {})
    for k, v in more.items():
        out[k] = out.get(k, 0) + v
    return out


def _deep_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v if not isinstance(v, dict) else dict(v)


def _typename(value: Any) -> str:
    return {bool: "bool", int: "int", float: "double", str: "string", list: "list", dict: "map"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _parse_time(value: Any) -> float:
    import datetime as dt

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"until must be an RFC 3339 timestamp, got {_typename(value)}")
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
