"""Operator control beyond one plain pause/resume/cancel: resuming an execution paused on a
node (`on_exhausted: pause`) with new arguments for that node, and acting on every execution
a ListExecutions filter matches in one bounded call.

A bulk call acts on at most `limit` executions (the page), at most `BULK_PARALLEL` at a time,
and says per execution whether the action was applied or why it was refused; a
continuation (the id of the last execution considered) lets the caller go on. So one call
holds the server for a bounded time (at most `limit` control requests, each bounded by
Engine._control's own wait of 10 s for another replica) and bounded memory (one page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema

from agentrun.engine import sizes
from agentrun.engine.errors import (
    AgentrunError,
    Diagnostic,
    IllegalTransition,
    InvalidInput,
    WorkflowNotFound,
)
from agentrun.storage.records import ExecutionRecord, ExecutionState, NodeState

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

# Control requests of one bulk call in flight at once.
BULK_PARALLEL = 16
ACTIONS = ("pause", "resume", "cancel")


async def check_override(
    engine: Engine, record: ExecutionRecord, node_id: str, args: Any, given: bool
) -> None:
    """Refuses a resume on `node_id` unless the execution is paused on it (IllegalTransition),
    and `args` the node cannot take (InvalidInput naming the field): a tool node's args must
    hold to the tool's args schema, a workflow node's to the child workflow's input schema;
    other kinds take none."""
    if record.state is not ExecutionState.PAUSED:
        raise IllegalTransition(
            f"cannot resume execution {record.id} on node {node_id!r}: it is {record.state.value}",
            current_state=record.state.value,
        )
    nodes = {n.node_id: n for n in await engine.store.get_nodes(record.id)}
    rec = nodes.get(node_id)
    if rec is None or rec.state is not NodeState.READY or not (rec.exhausted or {}).get("paused"):
        raise IllegalTransition(
            f"execution {record.id} is not paused on node {node_id!r}",
            current_state=record.state.value,
        )
    if not given:
        return
    sizes.check_request("args", args, "input_bytes")
    plan = await engine.plan_of(record)
    node = plan.nodes.get(node_id) if plan is not None else None
    step = node.step if node is not None else None
    if step is None or step.kind not in ("tool", "workflow"):
        kind = node.kind if node is not None else "unknown"
        raise InvalidInput(
            [
                Diagnostic(
                    "args",
                    f"node {node_id!r} is a {kind} node; only tool and workflow nodes take args",
                )
            ]
        )
    if step.kind == "tool" and step.tool is not None:
        schema = step.tool.args_schema
    else:
        try:
            child = engine.workflows.dag_plan(
                await engine.workflows.cached(step.workflow, record.tenant, None)
            )
        except (WorkflowNotFound, InvalidInput):  # gone, or a state machine: its start says why
            child = None
        schema = child.input_schema if child is not None else None
    if schema:
        problems = []
        validator = jsonschema.validators.validator_for(schema)(schema)
        for err in sorted(validator.iter_errors(args), key=lambda e: list(e.path)):
            where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.path)
            problems.append(Diagnostic(f"args{where}", err.message))
        if problems:
            raise InvalidInput(problems)


@dataclass(slots=True)
class Outcome:
    """What a bulk call did to one execution: applied (`done`), or refused with `reason`."""

    execution_id: str
    done: bool
    state: ExecutionState | None
    reason: str = ""
    message: str = ""


async def control_many(
    engine: Engine,
    action: str,
    *,
    tenant: str,
    workflow: str | None,
    states: Sequence[ExecutionState],
    limit: int,
    after_id: str | None,
    compensate: bool = False,
) -> tuple[list[Outcome], str | None]:
    """Applies `action` to the next `limit` executions matching the filter after `after_id`;
    returns each one's outcome and the id to continue after (None: no more match)."""
    if action not in ACTIONS:
        raise InvalidInput(
            [Diagnostic("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")]
        )
    records = await engine.list_executions(
        tenant=tenant, limit=limit + 1, after_id=after_id, workflow=workflow, states=states
    )
    page, more = records[:limit], len(records) > limit
    gate = asyncio.Semaphore(BULK_PARALLEL)

    async def one(record: ExecutionRecord) -> Outcome:
        async with gate:
            try:
                if action == "pause":
                    after = await engine.pause(record.id, tenant=tenant)
                elif action == "resume":
                    after = await engine.resume(record.id, tenant=tenant)
                else:
                    after = await engine.cancel(record.id, tenant=tenant, compensate=compensate)
            except AgentrunError as exc:
                state = _state(exc) or record.state
                return Outcome(record.id, False, state, exc.reason, str(exc))
            return Outcome(record.id, True, after.state)

    outcomes = list(await asyncio.gather(*(one(r) for r in page)))
    return outcomes, (page[-1].id if more and page else None)


def _state(exc: AgentrunError) -> ExecutionState | None:
    current = exc.metadata.get("current_state")
    try:
        return ExecutionState(current) if current else None
    except ValueError:
        return None
