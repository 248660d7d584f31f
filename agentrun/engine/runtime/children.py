"""Children, as both interpreters start them: a DAG `workflow` node's child (an execution, or
an instance when the workflow is a state machine), a state machine's invoked workflow and its
`workflow` actions. A child's id is derived from its caller's, so a caller resumed after a
restart attaches to the same child instead of starting another."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from agentrun.engine.dag.messages import Cancel
from agentrun.engine.errors import InvalidInput, WorkflowNotFound
from agentrun.engine.instrument import current_traceparent
from agentrun.engine.ports import ToolFailure
from agentrun.storage.machines import InstanceState
from agentrun.storage.records import ExecutionRecord, ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine
    from agentrun.engine.machine.engine import MachineEngine
    from agentrun.engine.plan import WorkflowStep


def child_id_of(parent_id: str, key: str, attempt: int) -> str:
    """The id of the child a DAG node's attempt runs (an execution or a state machine
    instance): the same for the same attempt, so a resumed attempt finds its child."""
    return f"{parent_id}.{key.replace('[', '-').replace(']', '')}.{attempt}"


@contextlib.contextmanager
def start_failures() -> Iterator[None]:
    """A child that cannot start fails the caller's step: a missing workflow `tool_error`,
    input the workflow refuses `invalid_args`."""
    try:
        yield
    except WorkflowNotFound as exc:
        raise ToolFailure("tool_error", exc.message) from None
    except InvalidInput as exc:
        raise ToolFailure("invalid_args", exc.message) from None


async def ensure_child(
    engine: Engine,
    child_id: str,
    workflow: str,
    child_input: Any,
    *,
    tenant: str,
    version: int | None,
    parent: tuple[str, str],
    labels: dict[str, str] | None = None,
) -> None:
    """Starts the child execution unless it exists (`start_once`)."""
    await start_once(
        lambda: engine.store.get_execution(child_id),
        lambda: engine.start_execution(
            workflow,
            child_input,
            tenant=tenant,
            version=version or None,
            execution_id=child_id,
            parent=parent,
            labels=labels,
        ),
    )


async def start_once(
    read: Callable[[], Awaitable[object | None]], start: Callable[[], Awaitable[object]]
) -> None:
    """Starts a child unless `read` finds it stored. A workflow that is missing or refuses
    the input fails the caller's step (`tool_error`, `invalid_args`); a start that lost a
    race with a replay of the same caller finds the child started."""
    if await read() is not None:
        return
    try:
        with start_failures():
            await start()
    except ValueError:  # started concurrently by a replay of the same caller
        if await read() is None:
            raise


async def run_child(
    engine: Engine,
    parent_id: str,
    tenant: str,
    key: str,
    attempt: int,
    step: WorkflowStep,
    input: Any,
) -> Any:
    """A DAG `workflow` node's child: an execution, waited for, its output the node's; a
    state machine runs as an instance instead (`run_instance_child`). A cancelled node
    cancels its child."""
    machines = engine.machines
    version = step.workflow_version or None
    if machines is not None and await machines.is_machine(
        step.workflow, tenant=tenant, version=version
    ):
        return await run_instance_child(
            machines, parent_id, key, attempt, step.workflow, version, input, tenant
        )
    child_id = child_id_of(parent_id, key, attempt)
    traceparent = current_traceparent.get()
    await ensure_child(
        engine,
        child_id,
        step.workflow,
        input,
        tenant=tenant,
        version=step.workflow_version,
        parent=(parent_id, key),
        # A child resumed after a restart continues the caller's trace.
        labels={"traceparent": traceparent} if traceparent else None,
    )
    try:
        final = await engine.wait(child_id)
    except asyncio.CancelledError:
        engine.runs.post(child_id, Cancel())
        raise
    return child_output(final, f"child execution {child_id}", {"child_execution_id": child_id})


async def run_instance_child(
    machines: MachineEngine,
    parent_id: str,
    key: str,
    attempt: int,
    workflow: str,
    version: int | None,
    input: Any,
    tenant: str,
) -> Any:
    """A DAG `workflow` node naming a state machine: creates the instance (its id derived
    from the node's, so a resumed attempt attaches to the same one), waits for a final state
    and returns `{state, data}`; an instance that FAILED or was CANCELLED fails the node."""
    instance_id = child_id_of(parent_id, key, attempt)
    await start_once(
        lambda: machines.store.get_instance(instance_id),
        lambda: machines.create_instance(
            workflow,
            input,
            tenant=tenant,
            version=version,
            instance_id=instance_id,
            parent=(parent_id, key),
        ),
    )
    try:
        final = await machines.wait_final(instance_id)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await machines.cancel_instance(
                instance_id, tenant=tenant, reason="its parent node was cancelled"
            )
        raise
    if final.state is InstanceState.COMPLETED:
        return {"state": final.current, "data": final.data}
    err = final.error or {}
    raise ToolFailure(
        err.get("type") or "tool_error",
        f"state machine instance {instance_id} ended {final.state.value}: {err.get('message', '')}".strip(),
        details={"instance": instance_id, "state": final.current},
    )


def child_output(final: ExecutionRecord, what: str, details: dict[str, Any]) -> Any:
    """A finished child's output, or its failure as the caller's (`what` names the child in
    the message, e.g. `child execution ID`)."""
    if final.state is ExecutionState.SUCCEEDED:
        return final.output
    err = final.error or {}
    raise ToolFailure(
        err.get("type") or "tool_error",
        f"{what} ended {final.state.value}: {err.get('message', '')}".strip(),
        details=details,
    )
