"""What a DAG run's inbox receives, and what its fold asks the loop to do.

Messages come from the run's calls (`Done`, `Emitted`, `BreakerChanged`), its timers
(`RetryDue`, `WaitOver`, `EscalationTimedOut`, `DeadlineReached`), the scheduler (`Granted`)
and the engine (`SignalArrived`, `SignalOffered`, `Pause`, `Resume`, `Cancel`). `Fold.apply` matches on their
type. Effects are what the fold cannot do itself without an event loop: timers, cancelling a
call, scheduler slots, answering a control request once its effect is committed. Calls to
launch (`Call`) are kept apart: they start only after the turn's commit.

All are frozen values; an `ack` is opaque to the fold (the loop gives an asyncio future).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from agentrun.engine.dag.keys import TaskKey
from agentrun.engine.plan import NodePlan, StepPlan
from agentrun.storage.records import SignalRecord


# ------------------------------------------------------------------ messages
class Done(NamedTuple):
    """A call's attempt ended: `ok` with its output, or not with its error dict. (A named
    tuple, as `Call`: one is made for every call, and a frozen dataclass costs several times
    as much to build.)"""

    key: TaskKey
    attempt: int
    ok: bool
    value: Any


@dataclass(frozen=True, slots=True)
class RetryDue:
    """A retry delay elapsed (a node, a map item or a compensation)."""

    key: TaskKey


@dataclass(frozen=True, slots=True)
class WaitOver:
    """A wait's time came: a `wait` node's (elapsed, or its `timeout` ran out) or a waiting
    map item's (timed out)."""

    key: TaskKey
    timed_out: bool


@dataclass(frozen=True, slots=True)
class EscalationTimedOut:
    node: str


@dataclass(frozen=True, slots=True)
class DeadlineReached:
    """The execution's `timeout` ran out."""


@dataclass(frozen=True, slots=True)
class SignalArrived:
    signal: SignalRecord
    # Stored just now and handed over at once: its `signal.received` is not written yet, even
    # when the run's restore (a load of an unloaded run) already read it from the store.
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class SignalOffered:
    """A signal not stored yet (seq 0), handed to the run by its caller: the turn that takes
    it stores it (`Waits.offer`); `ack` is answered after that turn's commit, the signal's
    `consumed_by` then telling whether it was taken (None: declined, its caller stores it)."""

    signal: SignalRecord
    ack: Any


@dataclass(frozen=True, slots=True)
class Pause:
    ack: Any = None
    # The `execution.paused` event's data (why: e.g. a budget that does not fit).
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    ack: Any = None
    # {node, args?}: a resume on the node the execution is paused on, with its next arguments.
    override: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    ack: Any = None
    compensate: bool = False


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail the execution with `error` (a budget refused a call whose budget says
    `on_exhausted: fail`)."""

    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Granted:
    """The scheduler gave `key` a slot after `queued_seconds` (`throttled`: a rate-limit
    bucket held it back)."""

    key: TaskKey
    queued_seconds: float = 0.0
    throttled: bool = False


@dataclass(frozen=True, slots=True)
class Emitted:
    """A call reported progress (`agent.usage`, a tool's own events)."""

    key: TaskKey
    type: str
    data: Any


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    name: str
    state: str


Message = (
    Done
    | RetryDue
    | WaitOver
    | EscalationTimedOut
    | DeadlineReached
    | SignalArrived
    | SignalOffered
    | Pause
    | Resume
    | Cancel
    | Fail
    | Granted
    | Emitted
    | BreakerChanged
)


# ------------------------------------------------------------------- effects
@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Post `fire` after `delay` seconds (replacing a timer armed under the same key)."""

    key: TaskKey
    delay: float
    fire: Message


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: TaskKey


@dataclass(frozen=True, slots=True)
class CancelCall:
    key: TaskKey


@dataclass(frozen=True, slots=True)
class RequestSlot:
    """Ask the scheduler for a slot; the answer comes back as `Granted`."""

    key: TaskKey
    bucket: str | None
    node_priority: int
    target: str = ""
    # The agent step a budget covers (it reserves its estimate before it asks for a slot).
    budgeted: StepPlan | None = None


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    key: TaskKey


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer a control request, once this turn is committed."""

    token: Any


Effect = ArmTimer | CancelTimer | CancelCall | RequestSlot | ReleaseSlot | Ack


class Call(NamedTuple):
    """One attempt of a step to start after the commit: a node's, a map item's (`extra`
    holds `item` and `index`), a fallback's or a compensation's (`extra`: `output`)."""

    key: TaskKey
    node: NodePlan
    step: StepPlan
    attempt: int
    extra: dict[str, Any] | None = None
