"""The calls a DAG run launches after its commit (LangGraph's runner): one attempt of a tool,
agent, `pass` or `workflow` step through the one step invoker (`invoke_step`: timeout,
breaker, instrumentation), its progress and outcome posted back to the run's inbox, each in
a task of its own. A synchronous tool's attempt (`Tool.synchronous`) runs at once on the
run's loop (`attempt_now`: `invoke_step`'s steps without its coroutines), its outcome put in
the inbox by the loop's launches. A pure synchronous tool's attempt (`pure_synchronous`)
does not wait for the commit: the fold runs it inside the turn (`attempt_now`), as it
computes a `pass` node."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, assert_never

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.messages import BreakerChanged, Call, Done
from agentrun.engine.dag.values import expression_failure
from agentrun.engine.expressions import Activation, ExpressionError, Template
from agentrun.engine.plan import AgentStep, PassStep, StepPlan, ToolStep, WaitStep, WorkflowStep
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.steps import (
    Outcome,
    admit,
    breaker_for,
    call_agent,
    call_tool,
    check_args,
    check_result,
    failed,
    invoke_step,
    succeeded,
    target_of,
)

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold
    from agentrun.engine.dag.loop import DagRun

_T = TypeVar("_T")

# Enum members read on every step, as module constants: on Python 3.11 a member read
# through its class (`NodeState.RUNNING`) goes through `EnumType.__getattr__`, ~0.2 us.
_PURE = Effect.PURE
_MAIN = Role.MAIN


def pure_synchronous(step: StepPlan) -> bool:
    """Whether `step` calls a synchronous tool whose calls change nothing (`Effect.PURE`):
    its attempt may run inside the turn (`attempt_now`), as a `pass` node computes, its
    outcome committed with what made it ready."""
    if type(step) is not ToolStep:
        return False
    tool = step.tool
    return tool is not None and tool.synchronous and tool.effect is _PURE


def attempt_now(run: DagRun, call: Call) -> Outcome:
    """A synchronous tool's attempt run to its end, its outcome returned: the steps of
    `invoke_step` (breaker, schemas, a value every store can hold) without its coroutines,
    the tool's own coroutine driven once. The tool runs in a context of its own, as in a task,
    so what it sets there does not leak into the run's loop. With instrumentation (a span
    around the call), the coroutine way."""
    if run.instrumentation is not None:
        return _attempt_by_coroutine(run, call)
    step = call.step
    assert type(step) is ToolStep
    tool = step.tool
    assert tool is not None
    fold = run.fold
    breaker = run.breakers.get(tool.name, fold.plan.breakers)  # `breaker_for` a tool
    on_breaker = _on_breaker(run) if breaker is not None else _ignore
    ctx = _context(run, call)
    if step.labels:
        ctx = dataclasses.replace(ctx, labels=step.labels)
    if step.names or call.extra:
        try:
            act = _activation(fold, call)
        except ExpressionError as exc:
            return False, expression_failure(exc)
    else:
        act = Activation()  # constant arguments (what `activation` would build)
    try:
        if breaker is not None:
            admit(step, breaker, fold.clock, on_breaker)
        args = _args(run, step.args, act, call.key)
        if tool.args_schema:
            check_args(tool, args)
        coro = tool.call(args, ctx)
        context = contextvars.copy_context()
        try:
            context.run(coro.send, None)
        except StopIteration as stop:
            value = stop.value
        else:  # it would hold the run's loop (and its task) while it waits
            context.run(coro.close)
            return _suspended(tool)
        if tool.result_schema:
            check_result(tool, value)
        return succeeded(value, breaker, fold.clock, on_breaker)
    except Exception as exc:
        where = f"node {call.key.text} of {fold.id}"
        return failed(exc, call.attempt, None, breaker, fold.clock, on_breaker, where)


def _attempt_by_coroutine(run: DagRun, call: Call) -> Outcome:
    """`attempt_now` through `invoke_step` (a span to enter around the call)."""
    coro = call_attempt(run, call, synchronous=True)
    context = contextvars.copy_context()
    try:
        context.run(coro.send, None)
    except StopIteration as stop:
        outcome: Outcome = stop.value
        return outcome
    context.run(coro.close)
    tool = call.step.tool if isinstance(call.step, ToolStep) else None
    assert tool is not None
    return _suspended(tool)


def _suspended(tool: Tool) -> Outcome:
    return False, error_dict(
        "internal", f"tool {tool.name!r} is declared synchronous but suspended"
    )


def _ignore(name: str, state: str) -> None:
    return None


def _on_breaker(run: DagRun) -> Callable[[str, str], None]:
    return lambda name, state: run.post(BreakerChanged(name, state))


def _context(run: DagRun, call: Call) -> CallContext:
    fold, key = run.fold, call.key
    return CallContext(  # positional: cheaper, one is made for every call
        fold.id,  # execution_id
        call.node.id,  # node_id
        call.attempt,
        key.idempotency_key(fold.id),
        fold.record.tenant,
        run.secrets,
        lambda type_, data: run.emit(key, type_, data),  # emit
    )


def _activation(fold: Fold, call: Call) -> dict[str, Any]:
    """The step's own names: a map item's activation holds its item, not the map's items."""
    step = call.step
    if step.names or call.extra:
        return fold.activation(step.names, step.node_refs, call.extra, call.attempt)
    return Activation()  # constant arguments (what `activation` would build)


def _args(run: DagRun, template: Template, act: dict[str, Any], key: TaskKey) -> Any:
    """A call's arguments: the operator's for a node resumed from `on_exhausted: pause`
    with new ones, else the step's template evaluated."""
    if key.index is None and key.role is _MAIN:
        rec = run.fold.records.get(key.text)
        if rec is not None and rec.exhausted is not None and "args" in rec.exhausted:
            return rec.exhausted["args"]
    return template.evaluate(act)


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
    ctx = _context(run, call)
    try:
        act = _activation(fold, call)
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
        on_breaker=_on_breaker(run),
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
    match step:
        case ToolStep():
            return call_tool(step, _args(run, step.args, act, key), ctx)
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
                input=_args(run, step.workflow_input, act, key),
            )
        case WaitStep():  # a map's wait body waits in the fold; it is never called
            raise AssertionError(step.kind)
        case _:
            assert_never(step)
