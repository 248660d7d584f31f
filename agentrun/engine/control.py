"""Operator control of executions: signals (`signal`), pause, resume and cancel where the
execution runs (`apply`: here, or through the store on the replica that runs it), resuming an
execution paused on a node (`on_exhausted: pause`) with new arguments for that node
(`check_override`), and acting on every execution a ListExecutions filter matches in one
bounded call (`control_many`).

A bulk call acts on at most `limit` executions (the page), at most `BULK_PARALLEL` at a time,
and says per execution whether the action was applied or why it was refused; a
continuation (the id of the last execution considered) lets the caller go on. So one call
holds the server for a bounded time (at most `limit` control requests, each bounded by
`apply`'s own wait of 10 s for another replica) and bounded memory (one page).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema

from agentrun.engine import approvals, sizes
from agentrun.engine.dag.waits import CONTROL_SIGNAL
from agentrun.engine.errors import (
    AgentrunError,
    AlreadyExists,
    Diagnostic,
    IllegalTransition,
    InvalidInput,
    Unavailable,
    WorkflowNotFound,
)
from agentrun.engine.plan import StepNode, ToolStep, WorkflowStep
from agentrun.storage.records import ExecutionRecord, ExecutionState, NodeState, SignalRecord

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
    step = node.step if isinstance(node, StepNode) else None
    if not isinstance(step, ToolStep | WorkflowStep):
        kind = node.kind if node is not None else "unknown"
        raise InvalidInput(
            [
                Diagnostic(
                    "args",
                    f"node {node_id!r} is a {kind} node; only tool and workflow nodes take args",
                )
            ]
        )
    if isinstance(step, ToolStep):
        schema = step.tool.args_schema if step.tool is not None else None
    else:
        try:
            child = await engine.workflows.dag_plan(
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


async def signal(
    engine: Engine,
    execution_id: str,
    name: str,
    data: Any,
    tenant: str,
    signal_id: str | None,
) -> ExecutionRecord:
    """Stores a signal for a running execution and hands it to its run: a run here takes it
    with the turn that applies it, one commit (`_offered`); otherwise it is stored first
    (`Engine.add_signal`) and handed to its run here or on another replica. A known
    `signal_id` is applied once: its repeat answers as the first call did, even after the
    execution ended (perhaps by that signal), and is refused when its name or data differ."""
    applied = await _offered(engine, execution_id, name, data, tenant, signal_id)
    if applied is not None:
        return applied
    record = await engine.get_execution(execution_id, tenant=tenant)
    _check_signal(name, data, signal_id)
    if record.state.terminal:
        # A retry of a signal that was stored before the end (perhaps the one that ended
        # it) answers as its first call did: the id, not the state, decides.
        known = await engine.store.get_signal(execution_id, signal_id) if signal_id else None
        if known is None:
            raise IllegalTransition(
                f"execution {execution_id} is {record.state.value}; it takes no signals",
                current_state=record.state.value,
            )
        _same_signal(known, False, name, data, signal_id)
        return record
    stored, created = await engine.add_signal(
        SignalRecord(
            execution_id=execution_id,
            name=name,
            data=data,
            signal_id=signal_id or secrets.token_hex(8),
            created_at=engine.clock(),
        )
    )
    _same_signal(stored, created, name, data, signal_id)
    # The record read above: a second read would find the same state (the signal is applied
    # by the run's next turn, after this returns), at the cost of a read per signal.
    return record


def _check_signal(name: str, data: Any, signal_id: str | None) -> None:
    if not name:
        raise InvalidInput([Diagnostic("name", "is required")])
    if signal_id and signal_id.startswith(approvals.ANSWER_PREFIX):
        raise InvalidInput(
            [Diagnostic("signal_id", f"ids starting {approvals.ANSWER_PREFIX!r} are AnswerWait's")]
        )
    sizes.check_request("data", data, "signal_bytes")


async def _offered(
    engine: Engine,
    execution_id: str,
    name: str,
    data: Any,
    tenant: str,
    signal_id: str | None,
) -> ExecutionRecord | None:
    """The signal handed, not stored, to the execution's run here (`Engine.offer_signal`:
    the signal and its effect are one commit, answered after it). A signal the run declines
    (no wait takes it now, or one before it was declined: `Waits.offer`) is stored after
    that turn, as any signal, and handed over again. The execution's record after that
    turn, or None when the signal is to be stored first (`signal`'s other way).

    A run that stops before its turn commits fails the call (Unavailable: nothing of this
    signal is stored, so a retry is safe), unless another replica stored a signal with this
    caller-chosen id meanwhile (PostgreSQL, several servers): the unique (execution, signal
    id) then refused the turn's commit, which stopped the run, and this call is answered as
    the stored way answers it (the stored signal's answer, or AlreadyExists for another name
    or data), not with a retry that can only find it stored."""
    offered = SignalRecord(
        execution_id=execution_id,
        name=name,
        data=data,
        signal_id=signal_id or secrets.token_hex(8),
        created_at=engine.clock(),
    )
    try:
        record = await engine.offer_signal(
            offered,
            tenant,
            check=lambda: _check_signal(name, data, signal_id),
            fresh_id=not signal_id,
        )
    except Unavailable:
        if signal_id and await engine.store.get_signal(execution_id, signal_id) is not None:
            return None  # stored by another replica meanwhile: answered the stored way
        raise
    if record is not None and offered.consumed_by is None:
        # Declined while the run had it (it may have ended since, as a signal stored just
        # before the end): stored now, and handed over as any signal.
        stored, created = await engine.add_signal(offered)
        _same_signal(stored, created, name, data, signal_id)
    return record


def _same_signal(
    stored: SignalRecord, created: bool, name: str, data: Any, signal_id: str | None
) -> None:
    """AlreadyExists when a used signal id was stored with another name or data."""
    if not created and (stored.name != name or stored.data != data):
        raise AlreadyExists(
            f"signal id {signal_id!r} was used for a different signal", signal_id=signal_id
        )


async def apply(
    engine: Engine,
    execution_id: str,
    tenant: str,
    action: str,
    allowed: set[ExecutionState] | None,
    compensate: bool = False,
    override: dict[str, Any] | None = None,
) -> ExecutionRecord:
    """Pauses, resumes or cancels one execution where it runs: its run here (loaded if it
    waits unloaded), a queued one cancelled in place, or, on another replica, a control
    request stored for its owner and the state change awaited (10 s)."""
    record = await engine.get_execution(execution_id, tenant=tenant)
    # Looked up after the read: the run (live, or just finished) knows better than a
    # store answer that may have been read before the execution ended.
    run = await engine.runs.load(execution_id)  # an unloaded (waiting) run is rebuilt
    if run is None and not record.state.terminal and record.owner == engine.replica_id:
        record = await engine.get_execution(execution_id, tenant=tenant)
        run = await engine.runs.load(execution_id)
    state = run.record.state if run is not None else record.state
    if state.terminal or (allowed is not None and state not in allowed):
        raise IllegalTransition(
            f"cannot {action} execution {execution_id}: it is {state.value}",
            current_state=state.value,
        )
    if run is None and action == "cancel" and record.state is ExecutionState.PENDING:
        return await engine.cancel_pending(record, "cancelled by request before it started")
    if run is None and not record.state.terminal and record.owner != engine.replica_id:
        # Another replica runs it: ask through the store, then watch the state change.
        await engine.store.add_signal(
            SignalRecord(
                execution_id=execution_id,
                name=CONTROL_SIGNAL,
                data={"action": action, "compensate": compensate, "override": override},
                signal_id=secrets.token_hex(8),
                created_at=engine.clock(),
            )
        )
        await engine.store.notify("signal", execution_id)
        return await _applied_elsewhere(engine, execution_id, tenant, action)
    if run is None or run.finished:
        raise IllegalTransition(
            f"cannot {action} execution {execution_id}: it is not running in this server",
            current_state=state.value,
        )
    await run.control(action, compensate=compensate, override=override)
    return await engine.get_execution(execution_id, tenant=tenant)


async def _applied_elsewhere(
    engine: Engine, execution_id: str, tenant: str, action: str
) -> ExecutionRecord:
    deadline = engine.clock() + 10.0
    while True:
        record = await engine.get_execution(execution_id, tenant=tenant)
        state = record.state
        if (
            (action == "pause" and state is ExecutionState.PAUSED)
            or (action == "resume" and state is not ExecutionState.PAUSED)
            or (action == "cancel" and (state.terminal or state is ExecutionState.COMPENSATING))
        ):
            return record
        if engine.clock() > deadline:
            raise Unavailable(f"the replica running {execution_id} did not apply {action} in time")
        await asyncio.sleep(0.05)


def _state(exc: AgentrunError) -> ExecutionState | None:
    current = exc.metadata.get("current_state")
    try:
        return ExecutionState(current) if current else None
    except ValueError:
        return None
