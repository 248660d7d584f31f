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

from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.machine.actions import Actions
from agentrun.engine.machine.guards import refusal
from agentrun.engine.machine.plan import (
    ACTION_ERROR,
    INVOKE_ERROR,
    MachinePlan,
    StatePlan,
    TransitionPlan,
)
from agentrun.engine.machine.work import ActionFailed, Event, Work
from agentrun.engine.ports import ToolFailure
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    TimerRecord,
)

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

_TRANSITION = EntryKind.TRANSITION


class Stepper:
    """Handles events for one MachineEngine; stateless beyond the engine it serves."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self.clock = machines.clock
        self.actions = Actions(machines)

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
        first = transitions[0] if transitions else None
        if first is not None and first.guard is None and not first.assign:
            # Taken whatever the event says, nothing assigned: no activation to build.
            if not first.quick:
                return None
            chosen: TransitionPlan | None = first
            assigned = None
        else:
            view = {"name": name, "id": event_id, "data": data}
            act = {
                "event": view,
                "data": record.data,
                "state": record.current,
                "input": record.input,
            }
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
                    exc,
                    transitions,
                    act,
                    instance=work.record.id,
                    event=ev.name,
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
                    await self.actions.call(work, action, act, results, source)
            for action in t.actions:
                await self.actions.call(work, action, act, results, source)
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
                    await self.actions.call(work, action, act, results, state.name)
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
            await self.m.invokes.start(
                work.record,
                child_id,
                invoke.workflow,
                invoke.version,
                child_input,
                f"invoke:{state.name}",
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
