"""Engine errors: each class carries a stable `reason`, the name of a value of
`agentrun.v1.ErrorReason` without its prefix (UPPER_SNAKE). The server maps each class to one
gRPC status code (agentrun/server/errors.py, the one place); the client maps the reason to one
SDK exception class. The engine itself knows nothing of gRPC."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a workflow or an input, located by a field path such as `nodes[2].when`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(path: str, key: str) -> str:
    """A diagnostic's path one key deeper: `a.b` for plain keys, `a["http.request"]` where a
    dot would mislead (the loader's and the compilers' paths are spelled the same)."""
    if not _SIMPLE_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


# Error texts list at most this many problems, and stop earlier past MAX_SUMMARY_CHARS, then
# say how many more there are: an answer must fit in gRPC's metadata limits (a few KB).
MAX_DIAGNOSTICS = 100
MAX_SUMMARY_CHARS = 1000
MAX_DIAGNOSTIC_CHARS = 300


def clip(text: str, limit: int = MAX_DIAGNOSTIC_CHARS) -> str:
    """`text` cut to `limit` characters, marked with `…` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(diagnostics: list[Diagnostic], head: str = "") -> str:
    """`head` and one line per problem, capped (MAX_DIAGNOSTICS, MAX_SUMMARY_CHARS), then the
    count of the problems left out."""
    lines = [head] if head else []
    size = len(head)
    shown = 0
    for d in diagnostics[:MAX_DIAGNOSTICS]:
        line = clip(str(d))
        if shown and size + len(line) > MAX_SUMMARY_CHARS - 40:  # room for the count
            break
        lines.append(f"  {line}" if head else line)
        size += len(line) + 3
        shown += 1
    if len(diagnostics) > shown:
        lines.append(
            f"  … and {len(diagnostics) - shown} more"
            if head
            else f"… and {len(diagnostics) - shown} more"
        )
    return "\n".join(lines) if head else "; ".join(lines)


class AgentrunError(Exception):
    """Base of engine errors; subclasses set `reason`. The base's INTERNAL is for bugs only."""

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
        super().__init__(message or summary(self.diagnostics, "invalid workflow:"))


class InvalidInput(AgentrunError):
    """An execution input or a request field is invalid; `diagnostics` say where."""

    reason = "INVALID_INPUT"

    def __init__(self, diagnostics: list[Diagnostic], message: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__(message or summary(self.diagnostics, "invalid input:"))


class InvalidArgument(AgentrunError):
    """A request argument other than the input is invalid (an unknown `from_node_id`)."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, diagnostics: list[Diagnostic], message: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__(message or summary(self.diagnostics))


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
    """A quota refuses the request for now (a tenant's queue of pending starts is full).

    `subject` and `quota` say which quota (they become a google.rpc.QuotaFailure); the reason
    is RATE_LIMITED, the ErrorReason for "too much at once, retry after the delay"."""

    reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        subject: str = "",
        quota: str = "",
        **metadata: Any,
    ) -> None:
        super().__init__(message, **metadata)
        self.retry_after = retry_after
        self.subject = subject
        self.quota = quota


class ShuttingDown(AgentrunError):
    """The engine is draining and takes no new work."""

    reason = "SHUTTING_DOWN"


class Unavailable(AgentrunError):
    """A dependency (the store) is down; the call may be retried."""

    reason = "UNAVAILABLE"
