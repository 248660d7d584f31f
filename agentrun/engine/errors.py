"""Engine errors: each has a stable `reason` (UPPER_SNAKE) that maps to one gRPC status code
in the server and to one SDK exception class in the client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a workflow or an input, located by a field path such as `nodes[2].when`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class AgentrunError(Exception):
    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items() if v is not None}


class InvalidWorkflow(AgentrunError):
    """The workflow text or spec breaks the language; `diagnostics` lists every problem."""

    reason = "INVALID_WORKFLOW"

    def __init__(self, diagnostics: list[Diagnostic], message: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        text = message or "invalid workflow:\n" + "\n".join(f"  {d}" for d in self.diagnostics)
        super().__init__(text)


class InvalidInput(AgentrunError):
    """An execution input or a request field is invalid; `diagnostics` say where."""

    reason = "INVALID_INPUT"

    def __init__(self, diagnostics: list[Diagnostic], message: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        text = message or "invalid input:\n" + "\n".join(f"  {d}" for d in self.diagnostics)
        super().__init__(text)


class WorkflowNotFound(AgentrunError):
    reason = "WORKFLOW_NOT_FOUND"


class ExecutionNotFound(AgentrunError):
    reason = "EXECUTION_NOT_FOUND"


class AlreadyExists(AgentrunError):
    """A request_id (or signal id) reused with a different payload."""

    reason = "ALREADY_EXISTS"


class IllegalTransition(AgentrunError):
    """An operation the resource's current state does not allow (resume a running execution)."""

    reason = "ILLEGAL_TRANSITION"

    def __init__(self, message: str, *, current_state: str, **metadata: Any) -> None:
        super().__init__(message, current_state=current_state, **metadata)
        self.current_state = current_state


class ResourceExhausted(AgentrunError):
    """A limit refuses the request for now (a tenant's queue of pending starts is full)."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float = 1.0, **metadata: Any) -> None:
        super().__init__(message, **metadata)
        self.retry_after = retry_after


class ShuttingDown(AgentrunError):
    """The engine is draining and takes no new work."""

    reason = "SHUTTING_DOWN"


class Unavailable(AgentrunError):
    """A dependency (the store) is down; the call may be retried."""

    reason = "UNAVAILABLE"
