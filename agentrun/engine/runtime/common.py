"""Values both interpreters record the same way."""

from __future__ import annotations

from typing import Any

# The tenant of requests without an API key, and of everything an engine is asked without one.
DEFAULT_TENANT = "default"


def error_dict(type_: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure as stored in nodes, history entries, events and executions: `type` is the
    retry policies' and handlers' key, `details` always an object."""
    return {"type": type_, "message": message, "details": details or {}}
