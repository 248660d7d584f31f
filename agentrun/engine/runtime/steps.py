"""The one step invoker: a tool or agent call with its timeout, circuit breaker and
instrumentation, its failure as an error dict. A DAG node, map item, compensation or
fallback (`run_call` in agentrun/engine/dag/calls.py) and a state machine action (`Stepper._action`) call steps through it;
each interpreter keeps only how it reads a step's inputs (its activation) and what it does
with the outcome (`next_retry` decides whether another attempt follows)."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import jsonschema

from agentrun.engine.breakers import Breakers, CircuitBreaker
from agentrun.engine.expressions import ExpressionError, Template
from agentrun.engine.json_values import unstorable
from agentrun.engine.plan import AgentStep, BreakerSpec, StepPlan, ToolStep, WorkflowStep
from agentrun.engine.ports import AgentRequest, CallContext, Tool, ToolFailure
from agentrun.engine.runtime.common import error_dict
from agentrun.engine.runtime.deltas import DeltaStream
from agentrun.engine.schema_numbers import coerce_numbers

log = logging.getLogger("agentrun.engine")

# A step's outcome: (True, output) or (False, error dict).
Outcome = tuple[bool, Any]


def breaker_for(
    step: StepPlan, breakers: Breakers, specs: dict[str, BreakerSpec]
) -> CircuitBreaker | None:
    """The breaker guarding `step`'s tool or provider, if one is configured (server config,
    else the workflow's `circuit_breakers`)."""
    match step:
        case ToolStep(tool=tool) if tool is not None:
            return breakers.get(tool.name, specs)
        case AgentStep(provider=provider) if provider is not None:
            return breakers.get(provider.name, specs)
    return None


def target_of(step: StepPlan) -> str:
    """What the step calls, for traces and metrics: a tool name, provider/model, a workflow."""
    match step:
        case ToolStep(tool=tool) if tool is not None:
            return tool.name
        case AgentStep(provider=provider) if provider is not None:
            return f"{provider.name}/{step.model}"
        case WorkflowStep():
            return step.workflow
    return ""


def _called_name(step: StepPlan) -> str:
    """The name an open breaker's refusal gives: the tool's, or the agent's model."""
    match step:
        case ToolStep(tool=tool) if tool is not None:
            return tool.name
        case AgentStep():
            return step.model
    return ""


async def call_tool(step: ToolStep, args: Any, ctx: CallContext) -> Any:
    """Calls `step`'s tool once its args hold to the tool's `args_schema` (the first problem,
    by path, fails the attempt with `invalid_args`), with the step's routing labels and
    deadline in `ctx`; a result that does not hold to the tool's `result_schema` fails the
    attempt with `invalid_output`, naming the tool, the result's path and the schema's."""
    tool = step.tool
    assert tool is not None
    if tool.args_schema:
        check_args(tool, args)
    deadline = _deadline.get()
    if step.labels or deadline is not None:
        ctx = dataclasses.replace(ctx, labels=step.labels, deadline=deadline)
    result = await tool.call(args, ctx)
    if tool.result_schema:
        check_result(tool, result)
    return result


def check_args(tool: Tool, args: Any) -> None:
    """Raises `invalid_args` unless `args` hold to `tool`'s `args_schema`."""
    schema = tool.args_schema
    if schema:
        error = _first_error(schema, args)
        if error is not None:
            where = _path(error.path)
            raise ToolFailure(
                "invalid_args", f"args{where}: {error.message}", details={"field": f"args{where}"}
            )


def check_result(tool: Tool, result: Any) -> None:
    """Raises `invalid_output` unless `result` holds to `tool`'s `result_schema`."""
    schema = tool.result_schema
    if schema:
        error = _first_error(schema, result)
        if error is not None:
            where, rule = _path(error.path), "/".join(str(p) for p in error.schema_path)
            raise ToolFailure(
                "invalid_output",
                f"tool {tool.name!r} returned a result that does not match its result_schema:"
                f" result{where}: {error.message} (schema path: {rule})",
                details={"tool": tool.name, "field": f"result{where}", "schema_path": rule},
            )


def _first_error(schema: Any, value: Any) -> jsonschema.ValidationError | None:
    """The first problem of `value` against `schema`, by path (None: it holds)."""
    validator = _validators.get(id(schema))
    if validator is None or validator[0] is not schema:
        validator = (schema, jsonschema.Draft202012Validator(schema))
        if len(_validators) > 1024:
            _validators.clear()
        _validators[id(schema)] = validator
    errors = sorted(validator[1].iter_errors(value), key=lambda e: list(e.path))
    return errors[0] if errors else None


def _path(parts: Any) -> str:
    return "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in parts)


# Validators by schema object (a tool's schemas live as long as the tool), so each call does
# not rebuild one; the schema is kept beside it, so a recycled id is never mistaken.
_validators: dict[int, tuple[Any, jsonschema.Draft202012Validator]] = {}
# When the running step's timeout fires (epoch seconds): set by `invoke_step` around the call,
# read by `call_tool` into the CallContext (a remote worker is told its deadline).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "agentrun_step_deadline", default=None
)


async def call_agent(step: AgentStep, render: Callable[[Template], Any], ctx: CallContext) -> Any:
    """Asks `step`'s provider; `render` evaluates the prompt and system templates in the
    interpreter's activation. An answer that does not match `output_schema` fails the
    attempt with `invalid_output`; one that does has its numbers typed as the schema says.
    The text the provider streams reaches the interpreter's `ctx.emit` through a
    `DeltaStream` (coalesced, numbered, voided if the attempt fails; none with `stream:
    false`); an interpreter without `emit` gets no deltas."""
    assert step.provider is not None
    request = AgentRequest(
        model=step.model,
        prompt=render(step.prompt) if step.prompt else "",
        system=render(step.system) if step.system else "",
        output_schema=step.output_schema,
        tools=step.agent_tools,
        max_turns=step.max_turns,
        temperature=step.temperature,
        max_tokens=step.max_tokens,
        stream=step.stream,
    )
    if ctx.emit is None:
        return _checked_answer(step, await step.provider.complete(request, ctx))
    deltas = DeltaStream(
        ctx.emit, attempt=ctx.attempt, secrets=ctx.secrets, enabled=step.stream is not False
    )
    try:
        answer = _checked_answer(
            step, await step.provider.complete(request, replace(ctx, emit=deltas.emit))
        )
    except BaseException:
        deltas.discard()
        raise
    deltas.close()
    return answer


def _checked_answer(step: AgentStep, answer: Any) -> Any:
    if step.output_schema is not None:
        try:
            jsonschema.validate(answer, step.output_schema)
        except jsonschema.ValidationError as exc:
            raise ToolFailure(
                "invalid_output", f"answer does not match output_schema: {exc.message}"
            ) from None
        return coerce_numbers(answer, step.output_schema)
    return answer


async def invoke_step(
    step: StepPlan,
    call: Callable[[], Awaitable[Any]],
    *,
    attempt: int,
    timeout: float | None,
    breaker: CircuitBreaker | None,
    clock: Callable[[], float],
    on_breaker: Callable[[str, str], None],
    span: Callable[[], AbstractContextManager[Any]] | None = None,
    where: str = "",
) -> Outcome:
    """One attempt of `step`: `call()` bounded by `timeout`, refused while `breaker` is open
    (`circuit_open`), inside `span()` (the instrumentation's attempt hook). Never raises but
    for cancellation: a failure, a timeout, a result no store can hold (`invalid_output`) or a
    bug in a tool comes back as `(False, error dict)`. `on_breaker(name, state)` hears of
    each change of the breaker's state. A synchronous tool's attempt without a span takes
    the same steps without a coroutine (`attempt_now` in agentrun/engine/dag/calls.py)."""
    try:
        if breaker is not None:
            admit(step, breaker, clock, on_breaker)
        if span is not None:
            with span():
                value = await (_bounded(call, timeout) if timeout else call())
        else:  # no context manager to enter: most calls (a synchronous tool's is a few us)
            value = await (_bounded(call, timeout) if timeout else call())
        return succeeded(value, breaker, clock, on_breaker)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return failed(exc, attempt, timeout, breaker, clock, on_breaker, where)


class _Refused(ToolFailure):
    """An open breaker's refusal: the attempt fails `circuit_open` without being counted."""


def admit(
    step: StepPlan,
    breaker: CircuitBreaker,
    clock: Callable[[], float],
    on_breaker: Callable[[str, str], None],
) -> None:
    """Raises `circuit_open` if `breaker` refuses the attempt now."""
    allowed, changed = breaker.allow(clock())
    if changed is not None:
        on_breaker(breaker.name, changed.value)
    if not allowed:
        raise _Refused("circuit_open", f"circuit breaker {_called_name(step)!r} is open")


def succeeded(
    value: Any,
    breaker: CircuitBreaker | None,
    clock: Callable[[], float],
    on_breaker: Callable[[str, str], None],
) -> Outcome:
    """A call's value as its attempt's outcome; raises `invalid_output` for a value that some
    store could not hold (what one backend could store and another not)."""
    problem = unstorable(value, "output")
    if problem is not None:
        raise ToolFailure("invalid_output", f"the result cannot be stored: {problem}")
    if breaker is not None:
        _record(breaker, True, None, clock, on_breaker)
    return True, value


def failed(
    exc: Exception,
    attempt: int,
    timeout: float | None,
    breaker: CircuitBreaker | None,
    clock: Callable[[], float],
    on_breaker: Callable[[str, str], None],
    where: str,
) -> Outcome:
    """What an attempt raised (anything but cancellation), as its outcome: a timeout, a
    typed failure or an expression's, counted by `breaker`; anything else is a bug in a
    tool, logged as one (`where`: which call)."""
    if isinstance(exc, TimeoutError):
        _record(breaker, False, "timeout", clock, on_breaker)
        return False, error_dict("timeout", f"attempt {attempt} timed out after {timeout}s")
    if isinstance(exc, ToolFailure):
        if not isinstance(exc, _Refused):
            _record(breaker, False, exc.type, clock, on_breaker)
        err = error_dict(exc.type, exc.message, exc.details)
        if exc.retry_after is not None:
            err["retry_after"] = exc.retry_after
        if not exc.retryable:
            err["retryable"] = False
        return False, err
    if isinstance(exc, ExpressionError):
        return False, error_dict("expression_error", exc.message, {"path": exc.path})
    # A bug in a tool must not take the engine down.
    log.error("%s failed unexpectedly", where or "a step", exc_info=exc)
    return False, error_dict("internal", f"{type(exc).__name__}: {exc}")


async def _bounded(call: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """`call()` within `timeout` seconds, its deadline told to `call_tool` (`_deadline`)."""
    token = _deadline.set(time.time() + timeout)
    try:
        async with asyncio.timeout(timeout):
            return await call()
    finally:
        _deadline.reset(token)


def _record(
    breaker: CircuitBreaker | None,
    ok: bool,
    error_type: str | None,
    clock: Callable[[], float],
    on_breaker: Callable[[str, str], None],
) -> None:
    if breaker is None:
        return
    changed = breaker.record(ok, error_type, clock())
    if changed is not None:
        on_breaker(breaker.name, changed.value)
