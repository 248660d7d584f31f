"""The calls a DAG run launches after its commit (LangGraph's runner): one attempt of a tool,
agent, `pass` or `workflow` step through the one step invoker (`invoke_step`: timeout,
breaker, instrumentation), its progress and outcome posted back to the run's inbox. A
synchronous tool's attempt (`Tool.synchronous`) runs at once on the run's loop (`run_now`),
the others each in a task of their own. A pure synchronous tool's attempt (`pure_synchronous`)
does not wait for the commit: the fold runs it inside the turn (`attempt_now`), as it computes
a `pass` node."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, assert_never

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import BreakerChanged, Call, Done
from agentrun.engine.dag.values import expression_failure
from agentrun.engine.expressions import Activation, ExpressionError
from agentrun.engine.plan import AgentStep, PassStep, StepPlan, ToolStep, WaitStep, WorkflowStep
from agentrun.engine.ports import CallContext, Effect
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.steps import (
    Outcome,
    breaker_for,
    call_agent,
    call_tool,
    invoke_step,
    target_of,
)

if TYPE_CHECKING:
    from agentrun.engine.dag.loop import DagRun

_T = TypeVar("_T")

# Enum members read on every step, as module constants: on Python 3.11 a member read
# through its class (`NodeState.RUNNING`) goes through `EnumType.__getattr__`, ~0.2 us.
_PURE = Effect.PURE
_MAIN = Role.MAIN


def synchronous(call: Call) -> bool:
    """Whether `call` is a synchronous tool's, to run with `run_now`."""
    step = call.step
    return isinstance(step, ToolStep) and step.tool is not None and step.tool.synchronous


def pure_synchronous(step: StepPlan) -> bool:
    """Whether `step` calls a synchronous tool whose calls change nothing (`Effect.PURE`):
    its attempt may run inside the turn (`attempt_now`), as a `pass` node computes, its
    outcome committed with what made it ready."""
    if type(step) is not ToolStep:
        return False
    tool = step.tool
    return tool is not None and tool.synchronous and tool.effect is _PURE


def run_now(run: DagRun, call: Call) -> None:
    """A synchronous tool's attempt, to its end before this returns: no task, no trip through
    the event loop (its `Done` is in the inbox when this returns)."""
    ok, value = attempt_now(run, call)
    run.post(Done(call.key, call.attempt, ok, value))


def attempt_now(run: DagRun, call: Call) -> Outcome:
    """A synchronous tool's attempt run to its end, its outcome returned. It runs in a
    context of its own, as a task would, so what it sets there does not leak into the run's
    loop."""
    coro = call_attempt(run, call, synchronous=True)
    context = contextvars.copy_context()
    try:
        context.run(coro.send, None)
    except StopIteration as stop:
        outcome: Outcome = stop.value
        return outcome
    # It suspended after all: it would hold the run's loop (and its task) while it waits.
    context.run(coro.close)
    tool = call.step.tool if isinstance(call.step, ToolStep) else None
    assert tool is not None
    return False, error_dict(
        "internal", f"tool {tool.name!r} is declared synchronous but suspended"
    )


async def run_call(run: DagRun, call: Call) -> None:
    """One attempt of `call` in a task of its own; posts `Done` (never raises but for
    cancellation)."""
    ok, value = await call_attempt(run, call)
    run.post(Done(call.key, call.attempt, ok, value))


def call_attempt(
    run: DagRun, call: Call, *, synchronous: bool = False
) -> Coroutine[Any, Any, Outcome]:
    """One attempt of `call`: its outcome, awaited (never raises but for cancellation).
    `synchronous`: run by `attempt_now`, so no timeout (nothing could interrupt the call)."""
    fold = run.fold
    key, node, step, attempt = call.key, call.node, call.step, call.attempt
    timeout = None if synchronous else node.timeout if step.timeout is None else step.timeout
    ctx = CallContext(  # positional: cheaper, one is made for every call
        fold.id,  # execution_id
        node.id,  # node_id
        attempt,
        key.idempotency_key(fold.id),
        fold.record.tenant,
        run.secrets,
        lambda type_, data: run.emit(key, type_, data),  # emit
    )
    try:
        # The step's own names: a map item's activation holds its item, not the map's items.
        act = (
            fold.activation(step.names, step.node_refs, call.extra, attempt)
            if step.names or call.extra
            else Activation()  # constant arguments (what `activation` would build)
        )
    except ExpressionError as exc:
        return _now((False, expression_failure(exc)))
    instr = run.instrumentation
    return invoke_step(
        step,
        lambda: _invoke(run, step, act, ctx, key, attempt),
        attempt=attempt,
        timeout=timeout,
        breaker=breaker_for(step, run.breakers, fold.plan.breakers),
        clock=fold.clock,
        on_breaker=lambda name, state: run.post(BreakerChanged(name, state)),
        span=(lambda: instr.attempt(fold.record, key.text, step.kind, attempt, target_of(step)))
        if instr is not None
        else None,
        where=f"node {key.text} of {fold.id}",
    )


async def _now(value: _T) -> _T:
    return value


def _invoke(
    run: DagRun, step: StepPlan, act: dict[str, Any], ctx: CallContext, key: TaskKey, attempt: int
) -> Awaitable[Any]:
    """The call itself (what `invoke_step` awaits), begun; what it raises before it awaits
    anything, `invoke_step` takes as the call's failure."""
    # The arguments an operator gave a node resumed from `on_exhausted: pause`.
    rec = run.fold.records.get(key.text) if key.index is None and key.role is _MAIN else None
    given, args = False, None
    if rec is not None and rec.exhausted is not None and "args" in rec.exhausted:
        given, args = True, rec.exhausted["args"]
    match step:
        case ToolStep():
            return call_tool(step, args if given else step.args.evaluate(act), ctx)
        case AgentStep():
            return call_agent(step, lambda t: t.evaluate(act), ctx)
        case PassStep():
            return _now(step.value.evaluate(act))
        case WorkflowStep():
            record = run.fold.record
            return run.host.run_child(
                parent_id=record.id,
                tenant=record.tenant,
                key=key.text,
                attempt=attempt,
                step=step,
                input=args if given else step.workflow_input.evaluate(act),
            )
        case WaitStep():  # a map's wait body waits in the fold; it is never called
            raise AssertionError(step.kind)
        case _:
            assert_never(step)
