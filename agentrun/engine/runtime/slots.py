"""A scheduler slot around one step call, for an interpreter that awaits its calls (a state
machine action): the scheduler's limits (global, tenant, workflow, per target) and rate-limit
buckets hold for actions as they do for DAG nodes, whose run asks through its inbox
(`Gate.request`, agentrun/engine/dag/gate.py) with the same target and bucket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable

from agentrun.engine.plan import AgentStep, StepPlan, ToolStep
from agentrun.engine.scheduler import BaseScheduler, Ticket


def slot_target(step: StepPlan) -> str:
    """What a per-target limit counts a call against: the tool's name or the agent provider's
    ("" for anything else)."""
    match step:
        case ToolStep(tool=tool) if tool is not None:
            return tool.name
        case AgentStep(provider=provider) if provider is not None:
            return provider.name
    return ""


@contextlib.asynccontextmanager
async def step_slot(
    scheduler: BaseScheduler,
    owner: Hashable,
    step: StepPlan,
    *,
    tenant: str,
    workflow: str,
    bucket: str = "",
) -> AsyncIterator[None]:
    """Holds a slot for one call of `step` while the block runs: at once when no limit or
    bucket applies, else once the scheduler grants it (the wait is in the scheduler's queue,
    ordered with every other waiting call). Leaving the block (or being cancelled while
    waiting) gives the slot back."""
    target = slot_target(step)
    bucket_name = scheduler.bucket_for(bucket, target)
    if not scheduler.active and bucket_name is None:
        yield
        return
    granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def grant(_ticket: Ticket) -> None:
        if not granted.done():
            granted.set_result(None)

    scheduler.request(
        owner,
        tenant=tenant,
        workflow=workflow,
        execution_priority=0,
        node_priority=0,
        bucket=bucket_name,
        grant=grant,
        target=target,
    )
    try:
        await granted
        yield
    finally:
        scheduler.release(owner)
