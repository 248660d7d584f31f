"""State machine actions: one call of an action's step per handling of its event.

A call takes a scheduler slot (`step_slot`) and goes through the one step invoker
(`invoke_step`: timeout, circuit breaker, instrumentation); `next_retry` decides what its
failure means: another attempt later (`Suspended`: the event is stored pending, retries.py)
or a final failure (`ActionFailed`). An action the pending event called before is not called
again: its result is replayed, so a resumed event chooses the same way it did.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.machine.plan import ActionPlan
from agentrun.engine.machine.work import ActionFailed, Suspended, Work
from agentrun.engine.plan import AgentStep, PassStep, StepPlan, ToolStep, WorkflowStep
from agentrun.engine.ports import CallContext
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.retries import next_retry
from agentrun.engine.runtime.slots import step_slot
from agentrun.engine.runtime.steps import breaker_for, call_agent, call_tool, invoke_step, target_of
from agentrun.storage.machines import InstanceRecord

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")


class Actions:
    """Calls the actions of one MachineEngine."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self.clock = machines.clock

    async def call(
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
        attempt, started = 1, self.clock()
        pending = work.pending
        if pending is not None and not work.resumed:
            n = len(work.calls)
            if n < len(pending["done"]):
                done = pending["done"][n]
                if done.get("path") != action.path:  # pragma: no cover - a plan never changes
                    raise ActionFailed(
                        error_dict(
                            "internal",
                            f"the pending event called {done.get('path')}, not {action.path}",
                        )
                    )
                work.calls.append(done)
                results.append(done)
                if done["ok"]:
                    return
                raise _failed(action, done["error"])
            # The action the pending event waits to call again.
            attempt, started = pending["attempt"], pending["started"]
            work.resumed = True
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
        step: StepPlan,
        act: dict[str, Any],
        ctx: CallContext,
        record: InstanceRecord,
        seq: int,
        action: ActionPlan,
        attempt: int,
    ) -> Any:
        match step:
            case ToolStep():
                return await call_tool(step, step.args.evaluate(only(act, step.args.names)), ctx)
            case AgentStep():
                return await call_agent(step, lambda t: t.evaluate(only(act, t.names)), ctx)
            case PassStep():
                return step.value.evaluate(only(act, step.value.names))
            case WorkflowStep():
                child_input = step.workflow_input.evaluate(only(act, step.workflow_input.names))
                child_id = f"{record.id}.{seq}.{action.phase}{action.index}.{attempt}"
                return await self.m.invokes.run_action_workflow(
                    record, child_id, step.workflow, step.workflow_version, child_input
                )
        raise AssertionError(step.kind)  # a wait step is a map's body only


def _failed(action: ActionPlan, err: dict[str, Any]) -> ActionFailed:
    return ActionFailed({**err, "details": {**err.get("details", {}), "action": action.path}})


def _breaker_changed(name: str, state: str) -> None:
    """An instance has no event stream for breakers (a DAG run records `breaker.*` events)."""
    log.info("circuit breaker %s is %s", name, state)


def only(act: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The names of the activation an expression reads."""
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
