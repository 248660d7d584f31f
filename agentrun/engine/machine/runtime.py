"""How one event changes one instance: guards, exit actions, transition actions, assign, entry
actions, timers and invokes, as FORMAT.md's "State machines" section defines them.

`Stepper.process` works on a `Work`: a scratch copy of the instance's state. Nothing of the
instance changes until the whole event was handled; then the façade (`engine.py`) applies the
work, commits one batch and publishes the history entries. So an event is applied entirely or
not at all: a crash (or a cancelled caller) while an action runs leaves the instance as it was,
and the event is handled again when it comes again (a client retries with the same event id;
timers and invoke completions come again by themselves after a restart).

Order within an event (the transition from S to T):
  1. guards of the event's transitions, in order; the first that holds wins (none: NO_TRANSITION)
  2. S's exit actions (only when leaving: T != S, or `reenter`)
  3. the transition's actions
  4. `assign` (every value sees the data as it was before the assign)
  5. T's entry actions (only when entering), then T's timers are armed and its invoke started
An action whose attempt failed and whose retry policy asks for another stops the event there
(`Suspended`): the façade stores the event as the instance's `pending` one, with the results of
the actions called so far and a retry timer row; when the timer fires (after a restart too) the
event is handled again from the start, the finished actions' results replayed instead of
calling them again (guards and assigns read only the instance, the event and the input, so
they choose the same way), and the waiting action called with its next attempt number.
An action failure (after its retries) stops there: the state's `on_error` transition is taken
(event `action:error`, `event.data` the error), from S if the failure came before the move and
from T if it came in T's entry actions; without `on_error`, or when the `on_error` transition
fails too, the instance ends FAILED. A guard or assign that fails to evaluate is such a failure,
except a guard of an event a client sent: that event is refused and nothing changes (guards.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.machine.guards import refusal
from agentrun.engine.machine.plan import (
    ACTION_ERROR,
    INVOKE_ERROR,
    ActionPlan,
    MachinePlan,
    StatePlan,
    TransitionPlan,
)
from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.retries import next_retry
from agentrun.engine.runtime.slots import step_slot
from agentrun.engine.runtime.steps import breaker_for, call_agent, call_tool, invoke_step, target_of
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    TimerRecord,
)

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")
ACTIVE = InstanceState.ACTIVE
_TRANSITION = EntryKind.TRANSITION


class ActionFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


class Suspended(Exception):
    """An action's attempt failed and `next_retry` wants attempt `attempt` after `delay`
    seconds: the event stops here, to be stored as the instance's pending event."""

    def __init__(self, attempt: int, delay: float, started: float, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.attempt = attempt
        self.delay = delay
        self.started = started
        self.error = error


@dataclass(slots=True)
class Event:
    name: str
    id: str | None
    data: Any
    # external | timer | invoke | cancel
    source: str = "external"
    # timer: its key; invoke: the child execution it reports on
    ref: str | None = None
    # timer: its index in the state's `after`
    index: int = 0
    # invoke: whether the child failed
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As an instance's pending event stores it."""
        return {
            "name": self.name,
            "id": self.id,
            "data": self.data,
            "source": self.source,
            "ref": self.ref,
            "index": self.index,
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            d["name"], d.get("id"), d.get("data"), d.get("source", "external"), d.get("ref"),
            d.get("index", 0), bool(d.get("failed")),
        )


class Work:
    """The instance's state while an event is handled; applied only once the event is done."""

    __slots__ = (
        "calls",
        "current",
        "data",
        "entries",
        "entry_sequence",
        "error",
        "fired",
        "invoke",
        "invoke_failed",
        "now",
        "record",
        "replay",
        "resume",
        "seq",
        "start_invoke",
        "state",
        "stop_invoke",
        "timers",
    )

    def __init__(self, record: InstanceRecord, now: float) -> None:
        self.record = record
        self.current = record.current
        self.data = record.data
        self.state = record.state
        self.entry_sequence = record.entry_sequence
        self.seq = record.last_sequence
        self.entries: list[HistoryRecord] = []
        # None: unchanged; a list: the instance's timers from now on.
        self.timers: list[TimerRecord] | None = None
        self.fired: str | None = None
        self.invoke = record.invoke_execution
        self.error: dict[str, Any] | None = None
        # Child executions to wait for / to cancel once the batch is committed.
        self.start_invoke: str | None = None
        self.stop_invoke: list[str] = []
        # The invoke could not start: its error, reported as an `invoke:error` event.
        self.invoke_failed: dict[str, Any] | None = None
        self.now = now
        # The results of the actions called while handling the event, in call order; those
        # of a pending event's pass before are replayed, and its waiting action resumes at
        # (attempt, started).
        self.calls: list[dict[str, Any]] = []
        pending = record.pending
        if pending is None:
            self.replay: list[dict[str, Any]] = []
            self.resume: tuple[int, float] | None = None
        else:
            self.replay = pending["done"]
            self.resume = (pending["attempt"], pending["started"])

    def add(self, entry: HistoryRecord) -> HistoryRecord:
        self.entries.append(entry)
        return entry

    def snapshot(self) -> InstanceRecord:
        r = self.record
        return InstanceRecord(
            r.id,
            r.tenant,
            r.workflow,
            r.version,
            self.state,
            self.current,
            self.data,
            r.input,
            r.created_at,
            self.now,
            self.now if self.state is not ACTIVE else None,
            self.error,
            r.request_id,
            r.request_hash,
            r.parent_id,
            r.parent_node,
            self.seq,
            self.entry_sequence,
            self.invoke,
            r.labels,
            owner=r.owner,
            lease_epoch=r.lease_epoch,
            lease_expires_at=r.lease_expires_at,
        )


class Stepper:
    """Handles events for one MachineEngine; stateless beyond the engine it serves."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self.clock = machines.clock

    # -- activations ----------------------------------------------------------------------
    def activation(self, plan: MachinePlan, work: Work, event: dict[str, Any]) -> dict[str, Any]:
        act = {"event": event, "data": work.data, "state": work.current, "input": work.record.input}
        if plan.uses_secrets:
            act["secrets"] = self.m.secrets
        return act

    # -- one event --------------------------------------------------------------------------
    def quick(
        self,
        plan: MachinePlan,
        record: InstanceRecord,
        name: str,
        event_id: str | None,
        data: Any,
        now: float,
    ) -> Work | None:
        """The synchronous path for an external event whose transition calls nothing; None
        when the event needs `process` (a rejection, actions, an invoke, an error)."""
        state = plan.states[record.current]
        transitions = state.on.get(name)
        if transitions is None:
            return None
        view = {"name": name, "id": event_id, "data": data}
        act = {"event": view, "data": record.data, "state": record.current, "input": record.input}
        if plan.uses_secrets:
            act["secrets"] = self.m.secrets
        try:
            chosen = _choose(transitions, act)
            if chosen is not None and not chosen.quick:
                return None
            assigned = (
                {key: value.evaluate(act) for key, value in chosen.assign}
                if chosen and chosen.assign
                else None
            )
        except ExpressionError:
            return None  # `process` evaluates again and takes the failure path
        if assigned and sizes.output_error("", {**record.data, **assigned}) is not None:
            return None  # the same: `process` fails it with output_too_large
        work = Work(record, now)
        seq = work.seq = record.last_sequence + 1
        source = record.current
        if chosen is None:
            work.entries.append(
                HistoryRecord(
                    record.id,
                    seq,
                    EntryKind.NO_TRANSITION,
                    now,
                    name,
                    event_id,
                    data,
                    source,
                    source,
                    None,
                )
            )
            return work
        target = chosen.target or source
        if assigned is not None:
            work.data = {**record.data, **assigned}
        entry = HistoryRecord(
            record.id,
            seq,
            _TRANSITION,
            now,
            name,
            event_id,
            data,
            source,
            target,
            chosen.index,
            None,
            assigned,
        )
        work.entries.append(entry)
        if target != source or chosen.reenter:
            entry.reentered = target == source
            into = plan.states[target]
            work.current = target
            work.entry_sequence = seq
            if work.invoke is not None:
                work.stop_invoke.append(work.invoke)
                work.invoke = None
            if into.after:
                work.timers = [
                    TimerRecord(
                        record.id, f"{seq}:{timer.index}", target, timer.index, now + timer.delay
                    )
                    for timer in into.after
                ]
            elif state.after:
                work.timers = []  # drop the source state's timers
            # else: neither state has timers, so there are no rows to replace.
            if into.final:
                work.state = InstanceState.COMPLETED
                entry.instance_state = InstanceState.COMPLETED
        return work

    async def process(self, plan: MachinePlan, work: Work, ev: Event) -> HistoryRecord | None:
        """Handles `ev`; returns the entry that answers its sender (None: a stale timer or
        invoke completion, ignored)."""
        state = plan.states[work.current]
        view = {"name": ev.name, "id": ev.id, "data": ev.data}
        source = ev.source
        if source == "external":
            transitions = state.on.get(ev.name)
            if transitions is None:
                return work.add(self._entry(work, EntryKind.REJECTED, ev, work.current, None))
        elif source == "timer":
            if work.entry_sequence != int((ev.ref or "0:0").split(":", 1)[0]) or ev.index >= len(
                state.after
            ):
                return None
            work.fired = ev.ref
            transitions = (state.after[ev.index].transition,)
        elif source == "invoke":
            if ev.ref != work.invoke:
                return None
            work.invoke = None
            if ev.failed:
                if not state.on_error:
                    entry = work.add(self._entry(work, EntryKind.ABORTED, ev, work.current, None))
                    self._fail(
                        work,
                        ev.data
                        if isinstance(ev.data, dict)
                        else error_dict("tool_error", str(ev.data)),
                    )
                    return entry
                transitions = state.on_error
            else:
                transitions = state.on_done
                if not transitions:
                    return work.add(
                        self._entry(work, EntryKind.NO_TRANSITION, ev, work.current, None)
                    )
        elif source == "cancel":
            entry = work.add(self._entry(work, EntryKind.CANCELLED, ev, work.current, None))
            self._end(work, InstanceState.CANCELLED)
            work.error = error_dict("cancelled", ev.data or "cancelled by request")
            entry.instance_state = work.state
            return entry
        else:  # pragma: no cover
            raise AssertionError(source)
        act = self.activation(plan, work, view)
        try:
            chosen = _choose(transitions, act)
        except ExpressionError as exc:
            if source == "external":  # the sender's data did not fit: refuse, change nothing
                raise refusal(
                    exc, transitions, act, instance=work.record.id, event=ev.name,
                    current=work.current,
                ) from None
            entry = work.add(self._entry(work, EntryKind.ABORTED, ev, work.current, None))
            err = error_dict("expression_error", exc.message, {"path": exc.path})
            entry.error = err
            await self._failure(plan, work, ev, err, exited=False, handling_error=False)
            return entry
        if chosen is None:
            return work.add(self._entry(work, EntryKind.NO_TRANSITION, ev, work.current, None))
        return await self._take(
            plan, work, ev, view, act, chosen, handling_error=False, skip_exit=False
        )

    async def _take(
        self,
        plan: MachinePlan,
        work: Work,
        ev: Event,
        view: dict[str, Any],
        act: dict[str, Any],
        t: TransitionPlan,
        *,
        handling_error: bool,
        skip_exit: bool,
    ) -> HistoryRecord:
        source = work.current
        target = t.target or source
        leaving = target != source or t.reenter
        results: list[dict[str, Any]] = []
        exited = False
        try:
            if leaving and not skip_exit:
                exited = True
                for action in plan.states[source].exit:
                    await self._action(work, action, act, results, source)
            for action in t.actions:
                await self._action(work, action, act, results, source)
            assigned = None
            if t.assign:
                assigned = {key: value.evaluate(act) for key, value in t.assign}
                too_large = sizes.output_error(
                    "the instance's data after this assign", {**work.data, **assigned}
                )
                if too_large is not None:
                    raise ActionFailed(too_large)
        except (ActionFailed, ExpressionError) as exc:
            err = (
                exc.error
                if isinstance(exc, ActionFailed)
                else error_dict("expression_error", exc.message, {"path": exc.path})
            )
            entry = work.add(self._entry(work, EntryKind.ABORTED, ev, source, t.index, results))
            entry.error = err
            await self._failure(
                plan, work, ev, err, exited=exited or skip_exit, handling_error=handling_error
            )
            return entry
        if assigned is not None:
            work.data = {**work.data, **assigned}
        entry = work.add(self._entry(work, _TRANSITION, ev, target, t.index, results or None))
        entry.assigned = assigned
        if not leaving:
            return entry
        entry.reentered = target == source
        if work.invoke is not None:
            work.stop_invoke.append(work.invoke)
            work.invoke = None
        await self._enter(plan, work, plan.states[target], entry, view, results, handling_error)
        return entry

    async def enter_initial(self, plan: MachinePlan, work: Work, entry: HistoryRecord) -> None:
        """Creation: the instance enters its initial state (entry actions, timers, invoke)."""
        view = {"name": entry.event, "id": None, "data": entry.event_data}
        results: list[dict[str, Any]] = []
        await self._enter(plan, work, plan.states[plan.initial], entry, view, results, False)

    async def _enter(
        self,
        plan: MachinePlan,
        work: Work,
        state: StatePlan,
        entry: HistoryRecord,
        view: dict[str, Any],
        results: list[dict[str, Any]],
        handling_error: bool,
    ) -> None:
        work.current = state.name
        work.entry_sequence = entry.sequence
        now = work.now
        work.timers = [
            TimerRecord(
                work.record.id,
                f"{entry.sequence}:{timer.index}",
                state.name,
                timer.index,
                now + timer.delay,
            )
            for timer in state.after
        ]
        act = self.activation(plan, work, view)
        if state.entry:
            try:
                for action in state.entry:
                    await self._action(work, action, act, results, state.name)
            except ActionFailed as exc:
                entry.actions = results
                entry.error = exc.error
                await self._failure(
                    plan,
                    work,
                    Event(entry.event, entry.event_id, entry.event_data),
                    exc.error,
                    exited=False,
                    handling_error=handling_error,
                )
                return
            entry.actions = results
        if state.final:
            self._end(work, InstanceState.COMPLETED)
            entry.instance_state = work.state
            return
        if state.invoke is not None:
            await self._start_invoke(work, state, act, entry.sequence)

    async def _start_invoke(
        self, work: Work, state: StatePlan, act: dict[str, Any], sequence: int
    ) -> None:
        invoke = state.invoke
        assert invoke is not None
        child_id = f"{work.record.id}.invoke.{sequence}"
        work.invoke = child_id
        try:
            child_input = invoke.input.evaluate(act) if invoke.input is not None else {}
            await self.m.start_child(
                work.record, child_id, invoke.workflow, invoke.version, child_input, f"invoke:{state.name}"
            )
        except ExpressionError as exc:
            work.invoke_failed = error_dict("expression_error", exc.message, {"path": exc.path})
        except ToolFailure as exc:
            work.invoke_failed = error_dict(exc.type, exc.message, exc.details)
        else:
            work.start_invoke = child_id

    async def _failure(
        self,
        plan: MachinePlan,
        work: Work,
        ev: Event,
        err: dict[str, Any],
        *,
        exited: bool,
        handling_error: bool,
    ) -> None:
        """An action (or guard, or assign) failed: the current state's `on_error`, or FAILED."""
        where = plan.states[work.current]
        if handling_error or not where.on_error:
            self._fail(work, err)
            return
        name = INVOKE_ERROR if ev.source == "invoke" else ACTION_ERROR
        error_event = Event(name, None, err, source="error")
        view = {"name": name, "id": None, "data": err}
        act = self.activation(plan, work, view)
        try:
            chosen = _choose(where.on_error, act)
        except ExpressionError as exc:
            self._fail(work, error_dict("expression_error", exc.message, {"path": exc.path}))
            return
        if chosen is None:
            self._fail(work, err)
            return
        await self._take(
            plan, work, error_event, view, act, chosen, handling_error=True, skip_exit=exited
        )

    def _fail(self, work: Work, err: dict[str, Any]) -> None:
        work.error = {**err, "state": work.current}
        self._end(work, InstanceState.FAILED)
        if work.entries:
            work.entries[-1].instance_state = InstanceState.FAILED
            if work.entries[-1].error is None:
                work.entries[-1].error = work.error

    def _end(self, work: Work, state: InstanceState) -> None:
        work.state = state
        work.timers = []
        if work.invoke is not None:
            work.stop_invoke.append(work.invoke)
            work.invoke = None

    def _entry(
        self,
        work: Work,
        kind: EntryKind,
        ev: Event,
        to_state: str,
        index: int | None,
        actions: list[dict[str, Any]] | None = None,
    ) -> HistoryRecord:
        work.seq += 1
        return HistoryRecord(
            work.record.id,
            work.seq,
            kind,
            work.now,
            ev.name,
            ev.id if ev.source == "external" else None,
            ev.data,
            work.current,
            to_state,
            index,
            actions,
            None,
            work.state,
        )

    # -- actions ------------------------------------------------------------------------------
    async def _action(
        self,
        work: Work,
        action: ActionPlan,
        act: dict[str, Any],
        results: list[dict[str, Any]],
        state: str,
    ) -> None:
        """Calls the action once (`invoke_step`: timeout, breaker, instrumentation): its
        success returns, a final failure (`next_retry` says so) raises ActionFailed, and a
        failure to try again raises Suspended. An action a pending event called before is
        not called again: its result is replayed."""
        n = len(work.calls)
        if n < len(work.replay):
            done = work.replay[n]
            if done.get("path") != action.path:  # pragma: no cover - a plan never changes
                raise ActionFailed(
                    error_dict("internal", f"the pending event called {done.get('path')}, not {action.path}")
                )
            work.calls.append(done)
            results.append(done)
            if done["ok"]:
                return
            raise _failed(action, done["error"])
        attempt, started = 1, self.clock()
        if work.resume is not None:  # the action the pending event waits to call again
            attempt, started = work.resume
            work.resume = None
        engine = self.m.engine
        step = action.step
        instr = engine.instrumentation
        record = work.record
        node_id = f"{state}.{action.phase}[{action.index}]"
        ctx = CallContext(
            execution_id=record.id,
            node_id=node_id,
            attempt=attempt,
            idempotency_key=f"{record.id}/{work.seq + 1}/{action.path}",
            tenant=record.tenant,
            secrets=self.m.secrets,
        )
        owner = (record.id, f"{work.seq + 1}:{action.path}", attempt)
        async with step_slot(
            engine.scheduler, owner, step, tenant=record.tenant, workflow=record.workflow
        ):
            ok, value = await invoke_step(
                step,
                lambda: self._invoke(step, act, ctx, record, work.seq + 1, action, attempt),
                attempt=attempt,
                timeout=action.timeout,
                breaker=breaker_for(step, engine.breakers, {}),
                clock=self.clock,
                on_breaker=_breaker_changed,
                span=(lambda: instr.attempt(record, node_id, step.kind, attempt, target_of(step)))
                if instr is not None
                else None,
                where=f"action {action.path} of instance {record.id}",
            )
        if ok:
            too_large = sizes.output_error("the action's output", value)
            if too_large is None:
                result = _result(action, state, attempt, started, self.clock(), True, value)
                work.calls.append(result)
                results.append(result)
                return
            value = too_large
        err = sizes.bound_error(value)
        delay = next_retry(action.retry, step, attempt, err, self.m.rng)
        if delay is not None:
            raise Suspended(attempt + 1, delay, started, err)
        result = _result(action, state, attempt, started, self.clock(), False, err)
        work.calls.append(result)
        results.append(result)
        raise _failed(action, err) from None

    async def _invoke(
        self,
        step: Any,
        act: dict[str, Any],
        ctx: CallContext,
        record: InstanceRecord,
        seq: int,
        action: ActionPlan,
        attempt: int,
    ) -> Any:
        if step.kind == "tool":
            return await call_tool(step, step.args.evaluate(_only(act, step.args.names)), ctx)
        if step.kind == "agent":
            return await call_agent(step, lambda t: t.evaluate(_only(act, t.names)), ctx)
        if step.kind == "pass":
            return step.value.evaluate(_only(act, step.value.names))
        if step.kind == "workflow":
            child_input = (
                step.workflow_input.evaluate(_only(act, step.workflow_input.names))
                if step.workflow_input
                else {}
            )
            child_id = f"{record.id}.{seq}.{action.phase}{action.index}.{attempt}"
            return await self.m.run_action_workflow(
                record, child_id, step.workflow, step.workflow_version, child_input
            )
        raise AssertionError(step.kind)


def _failed(action: ActionPlan, err: dict[str, Any]) -> ActionFailed:
    return ActionFailed({**err, "details": {**err.get("details", {}), "action": action.path}})


def _breaker_changed(name: str, state: str) -> None:
    """An instance has no event stream for breakers (a DAG run records `breaker.*` events)."""
    log.info("circuit breaker %s is %s", name, state)


def _choose(transitions: tuple[TransitionPlan, ...], act: dict[str, Any]) -> TransitionPlan | None:
    for t in transitions:
        guard = t.guard
        if guard is None:
            return t
        held = guard.evaluate(act)
        if held is True:
            return t
        if held is not False:
            raise ExpressionError(
                guard.path, f"a guard must yield a bool, not {type(held).__name__}"
            )
    return None


def _only(act: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {n: act[n] for n in names if n in act}


def _result(
    action: ActionPlan,
    state: str,
    attempts: int,
    started: float,
    ended: float,
    ok: bool,
    value: Any,
) -> dict[str, Any]:
    out = {
        "phase": action.phase,
        "state": state,
        "index": action.index,
        "path": action.path,
        "kind": action.step.kind,
        "target": action.target,
        "ok": ok,
        "attempts": attempts,
        "duration": round(ended - started, 6),
    }
    out["output" if ok else "error"] = value
    return out


def replay(
    plan: MachinePlan, input: Any, entries: list[HistoryRecord], secrets: Any = None
) -> tuple[str, dict[str, Any]]:
    """Replays a history from the initial state through the plan, re-evaluating every guard
    and assign (actions are not called again: their results are in the entries), and returns
    the state and data it reaches. Raises ValueError where the history and the plan disagree.

    For machines whose guards and assigns read only `event`, `data`, `state` and `input` (and
    secrets when given), this is the audit that the history explains the instance."""
    state, data = plan.initial, dict(plan.data)
    for entry in entries:
        if entry.kind is EntryKind.CREATED:
            if isinstance(entry.event_data, dict):
                data = {**data, **entry.event_data}
            state = entry.to_state
            continue
        if entry.from_state != state:
            raise ValueError(
                f"entry {entry.sequence}: from {entry.from_state!r}, replay is in {state!r}"
            )
        here = plan.states[state]
        if entry.kind is EntryKind.REJECTED:
            if entry.event in here.on:
                raise ValueError(f"entry {entry.sequence}: {entry.event!r} is handled in {state!r}")
            continue
        if entry.kind not in (EntryKind.TRANSITION, EntryKind.NO_TRANSITION):
            raise ValueError(f"entry {entry.sequence}: {entry.kind.value} entries are not replayed")
        if entry.event.startswith("after:"):
            transitions = tuple(t.transition for t in here.after if t.event == entry.event)
        elif entry.event == "invoke:done":
            transitions = here.on_done
        elif entry.event in ("invoke:error", "action:error"):
            transitions = here.on_error
        else:
            transitions = here.on.get(entry.event, ())
        act = {
            "event": {"name": entry.event, "id": entry.event_id, "data": entry.event_data},
            "data": data,
            "state": state,
            "input": input,
        }
        if secrets is not None:
            act["secrets"] = secrets
        chosen = _choose(transitions, act)
        index = chosen.index if chosen is not None else None
        if index != entry.transition_index:
            raise ValueError(
                f"entry {entry.sequence}: replay takes transition {index}, history {entry.transition_index}"
            )
        if chosen is None:
            continue
        if chosen.assign:
            data = {**data, **{key: value.evaluate(act) for key, value in chosen.assign}}
        state = chosen.target or state
        if state != entry.to_state:
            raise ValueError(
                f"entry {entry.sequence}: replay reaches {state!r}, history {entry.to_state!r}"
            )
    return state, data
