"""The one retry decision, wherever a step is called: a DAG node, a map item, a
compensation, a state machine action."""

from __future__ import annotations

import random
from typing import Any

from agentrun.engine.plan import StepPlan, ToolStep
from agentrun.engine.ports import Effect
from agentrun.engine.retry import RetrySpec


def irreversible(step: StepPlan | None) -> bool:
    """A tool whose call cannot be undone or repeated safely: never retried automatically,
    whatever a policy says (a person or a handler decides)."""
    return (
        isinstance(step, ToolStep)
        and step.tool is not None
        and step.tool.effect is Effect.IRREVERSIBLE
    )


def next_retry(
    policy: RetrySpec,
    step: StepPlan | None,
    attempt: int,
    error: dict[str, Any],
    rng: random.Random,
) -> float | None:
    """The delay before attempt `attempt + 1` of `step`, or None when `error` is final: the
    policy is spent or excludes the error type, or the step is an irreversible tool. A
    `retry_after` the call reported is waited at least; an error the call marked
    `retryable: false` is final."""
    if (
        irreversible(step)
        or error.get("retryable") is False
        or not policy.allows_retry(attempt, error["type"])
    ):
        return None
    delay = policy.delay(attempt, rng)
    if error.get("retry_after"):
        delay = max(delay, float(error["retry_after"]))
    return delay
