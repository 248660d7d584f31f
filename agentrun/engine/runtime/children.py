"""Child executions, as both interpreters start them: a DAG `workflow` node's child, a state
machine's invoked workflow and its `workflow` actions. A child's id is derived from its
caller's, so a caller resumed after a restart attaches to the same child instead of starting
another."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentrun.engine.errors import InvalidInput, WorkflowNotFound
from agentrun.engine.ports import ToolFailure
from agentrun.storage.records import ExecutionRecord, ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine


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
    """Starts the child unless it exists. A workflow that is missing or refuses the input
    fails the caller's step (`tool_error`, `invalid_args`); a start that lost a race with a
    replay of the same caller finds the child started."""
    if await engine.store.get_execution(child_id) is not None:
        return
    try:
        with start_failures():
            await engine.start_execution(
                workflow,
                child_input,
                tenant=tenant,
                version=version or None,
                execution_id=child_id,
                parent=parent,
                labels=labels,
            )
    except ValueError:  # started concurrently by a replay of the same caller
        if await engine.store.get_execution(child_id) is None:
            raise


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
