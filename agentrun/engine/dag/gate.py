"""Scheduler slots for a DAG run's calls: a call starts at once when no limit or rate-limit
bucket applies to it, else it asks for a slot (`RequestSlot`) and starts on `Granted`,
holding the slot until its outcome arrives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentrun.engine.dag.keys import TaskKey
from agentrun.engine.dag.messages import Granted, ReleaseSlot, RequestSlot
from agentrun.engine.plan import NodePlan, StepPlan
from agentrun.engine.runtime.slots import slot_target
from agentrun.storage.records import NodeState

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold

# What to do once a call may start: with the grant, or None when it needed no slot.
Go = Callable[[Granted | None], None]


@dataclass(frozen=True, slots=True)
class Gating:
    """What decides whether a call needs a slot: the scheduler limits nodes (`active`), a
    bucket applies (the node's `rate_limit`, else the bucket bound to its tool or provider),
    or a budget covers it."""

    active: bool = False
    bindings: Mapping[str, str] = field(default_factory=dict)
    # Whether a budget covers a step's call (it must reserve before it starts).
    budgeted: Callable[[StepPlan | None], bool] = lambda step: False


class Gate:
    def __init__(self, fold: Fold, gating: Gating) -> None:
        self.fold = fold
        self.gating = gating
        # Calls waiting for a slot (what to do on grant), and calls holding one.
        self.gated: dict[TaskKey, Go] = {}
        self.slots: set[TaskKey] = set()

    def at_once(self, node: NodePlan, step: StepPlan | None) -> bool:
        """Whether a call of `step` for `node` may start at once: no scheduler limit, no
        rate-limit bucket and no budget apply to it (else it goes through `request`)."""
        gating = self.gating
        return (
            not gating.active
            and not node.rate_limit
            and not gating.bindings
            and not gating.budgeted(step)
        )

    def request(self, key: TaskKey, node: NodePlan, step: StepPlan | None, go: Go) -> None:
        """Starts a call now, or asks the scheduler for a slot when limits or a rate-limit
        bucket apply (the node waits in READY meanwhile)."""
        gating = self.gating
        bucket = node.rate_limit or None
        # The tool or provider called ("" for a child workflow), for per-target limits.
        target = "" if step is None else slot_target(step)
        if bucket is None and gating.bindings:
            bucket = gating.bindings.get(target)
        budgeted = step if gating.budgeted(step) else None
        if not gating.active and bucket is None and budgeted is None:
            go(None)
            return
        self.gated[key] = go
        self.fold.effect(RequestSlot(key, bucket, node.priority, target, budgeted))

    def granted(self, grant: Granted) -> None:
        key = grant.key
        fold = self.fold
        go = self.gated.pop(key, None)
        if go is None:
            fold.effect(ReleaseSlot(key))
            return
        if key.index is None:
            rec = fold.records.get(key.node)
            if rec is None or rec.state is not NodeState.READY:
                fold.effect(ReleaseSlot(key))
                return
            if fold.paused or fold.draining:
                # Hand the slot back; the node starts again from the ready queue on resume.
                fold.effect(ReleaseSlot(key))
                fold.graph.push_ready(fold.plan.nodes[key.node])
                return
        self.slots.add(key)
        go(grant)

    def free(self, key: TaskKey) -> None:
        """The call holding `key`'s slot ended."""
        if key in self.slots:
            self.slots.discard(key)
            self.fold.effect(ReleaseSlot(key))

    def drop(self, match: Callable[[TaskKey], bool]) -> None:
        """Gives back the slots held or asked for by the keys that `match`."""
        for key in [k for k in self.gated if match(k)]:
            del self.gated[key]
            self.fold.effect(ReleaseSlot(key))
        for key in [k for k in self.slots if match(k)]:
            self.free(key)

    def drop_all(self) -> None:
        for key in [*self.gated, *self.slots]:
            self.fold.effect(ReleaseSlot(key))
        self.gated.clear()
        self.slots.clear()
