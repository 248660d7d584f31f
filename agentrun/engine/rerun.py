"""Rerun: a new execution linked to a finished one, the nodes that need not run again reused.

The new execution runs again from a node (by default the one the old execution failed at)
and everything after it; the nodes that succeeded before it keep their outputs, replayed
into the new execution's rows and into the vars their exports set, and do not run again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentrun.engine.errors import Diagnostic, IllegalTransition, InvalidArgument
from agentrun.engine.plan import DagPlan
from agentrun.engine.runtime.requests import checked_input, new_execution_id
from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
)

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine


async def rerun(
    engine: Engine,
    execution_id: str,
    tenant: str,
    from_node: str | None,
    input: Any,
    version: int | None,
    request_id: str | None,
    labels: Mapping[str, str] | None,
) -> ExecutionRecord:
    """Starts a new execution linked to a finished one (label `rerun_of`).

    Runs again from `from_node` (default: the node the old execution failed at; none: from
    the start). Nodes that succeeded and are neither that node nor its descendants keep
    their outputs and do not run again. `input` replaces the old input; `version` picks
    another version of the workflow (default: the old one)."""
    old = await engine.get_execution(execution_id, tenant=tenant)
    if not old.state.terminal:
        raise IllegalTransition(
            f"execution {execution_id} is {old.state.value}; only a finished execution can be rerun",
            current_state=old.state.value,
        )
    wf = await engine.workflows.get(old.workflow, tenant, version or old.version)
    plan = await engine.workflows.dag_plan(wf)
    start = from_node or (old.error or {}).get("node") or None
    if start is not None and start not in plan.nodes:
        raise InvalidArgument(
            [
                Diagnostic(
                    "from_node_id", f"workflow {wf.name!r} v{wf.version} has no node {start!r}"
                )
            ]
        )
    new_input = checked_input(old.input if input is None else input, plan.input_schema)
    again = _descendants(plan, start) if start is not None else set(plan.nodes)
    new_id = new_execution_id(engine.clock)
    reused = [
        NodeRecord(
            execution_id=new_id,
            node_id=rec.node_id,
            state=rec.state,
            attempt=rec.attempt,
            input=rec.input,
            output=rec.output,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            completed_order=rec.completed_order,
        )
        for rec in sorted(await engine.store.get_nodes(old.id), key=lambda r: r.completed_order)
        if rec.node_id in plan.nodes
        and rec.node_id not in again
        and rec.state is NodeState.SUCCEEDED
    ]
    now = engine.clock()
    record = ExecutionRecord(
        id=new_id,
        tenant=tenant,
        workflow=wf.name,
        version=wf.version,
        state=ExecutionState.PENDING,
        input=new_input,
        created_at=now,
        priority=old.priority,
        request_id=request_id or None,
        vars=_replay_exports(plan, reused, new_input),
        last_sequence=1,
        labels={
            **(labels or {}),
            "rerun_of": old.id,
            **({"rerun_from": start} if start else {}),
        },
        owner=engine.replica_id,
        lease_epoch=1,
        lease_expires_at=now + engine.lease_seconds,
    )
    event = EventRecord(
        new_id,
        1,
        "execution.pending",
        now,
        None,
        {
            "workflow": wf.name,
            "version": wf.version,
            "rerun_of": old.id,
            "reused": [r.node_id for r in reused],
        },
    )
    stored, created = await engine.store.create_execution(record, nodes=reused, events=[event])
    if not created:
        return stored
    engine.runs.start_rerun(plan, copy.copy(record), reused)
    return stored


def _descendants(plan: DagPlan, start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for edge in plan.nodes[stack.pop()].outgoing:
            if edge.target not in seen:
                seen.add(edge.target)
                stack.append(edge.target)
    return seen


def _replay_exports(plan: DagPlan, reused: list[NodeRecord], input: Any) -> dict[str, Any]:
    """The vars that the reused nodes' exports set, in their completion order."""
    vars: dict[str, Any] = {}
    for rec in reused:
        exports = plan.nodes[rec.node_id].export
        for key, template in (exports or {}).items():
            try:
                vars[key] = template.evaluate({"output": rec.output, "input": input, "vars": vars})
            except Exception:  # an export over names not replayed here is left unset
                continue
    return vars
