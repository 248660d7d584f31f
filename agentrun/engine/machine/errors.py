"""Errors of the state machine engine, with stable reasons like the engine's others."""

from __future__ import annotations

from collections.abc import Sequence

from agentrun.engine.errors import AgentrunError, IllegalTransition


class InstanceNotFound(AgentrunError):
    """No such state machine instance for the caller's tenant (NOT_FOUND)."""

    reason = "INSTANCE_NOT_FOUND"


class EventNotAccepted(IllegalTransition):
    """The instance's current state does not handle the event (FAILED_PRECONDITION); the
    accepted events travel in `accepted` and in the metadata (`accepted_events`, comma-separated)."""

    def __init__(
        self,
        message: str,
        *,
        instance: str,
        event: str,
        current: str,
        accepted: Sequence[str],
        sequence: int = 0,
    ) -> None:
        super().__init__(
            message,
            current_state=current,
            name=f"instances/{instance}",
            event=event,
            accepted_events=",".join(accepted),
            sequence=sequence or None,
        )
        self.instance = instance
        self.event = event
        self.accepted = list(accepted)
        self.sequence = sequence
