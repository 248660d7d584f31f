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


class GuardFailed(IllegalTransition):
    """A guard could not be evaluated for an event sent to the instance (FAILED_PRECONDITION):
    the event is refused and the instance is left as it was. `guard` is the guard's field
    path, `expression` its CEL source, `field` the path it read that the values lack (when
    that is the cause); all three travel in the metadata too."""

    def __init__(
        self,
        message: str,
        *,
        instance: str,
        event: str,
        current: str,
        guard: str,
        expression: str,
        field: str | None,
    ) -> None:
        super().__init__(
            message,
            current_state=current,
            name=f"instances/{instance}",
            event=event,
            guard=guard,
            expression=expression,
            field=field,
        )
        self.instance = instance
        self.event = event
        self.guard = guard
        self.expression = expression
        self.field = field
