"""The immutable plan a `mode: state_machine` WorkflowSpec compiles to (`MachinePlan`; a DAG
compiles to a `DagPlan`, and `compile_workflow` returns either).

The runtime reads only these slotted objects: guards and assignments are compiled once (with
the fast path of `fastcel` where an expression allows it), the accepted events of each state
are sorted once, and nothing on the hot path touches a protobuf message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentrun.engine.errors import Diagnostic
from agentrun.engine.expressions import Expression, Template
from agentrun.engine.machine.fastcel import Fallback, compile_fast
from agentrun.engine.plan import StepPlan
from agentrun.engine.retry import RetrySpec
from agentrun.v1 import workflow_pb2

# Names in scope for every state machine expression (FORMAT.md, Expressions).
MACHINE_NAMES = frozenset({"event", "data", "state", "input", "secrets"})

# The engine's own events; user event names may not contain ':'.
AFTER_PREFIX = "after:"
INVOKE_DONE = "invoke:done"
INVOKE_ERROR = "invoke:error"
ACTION_ERROR = "action:error"


class Compiled:
    """A compiled expression or whole-value template, with the fast path when it has one."""

    __slots__ = ("_constant", "_fast", "_is_constant", "_slow", "names", "path", "source")

    def __init__(self, slow: Expression | Template, *, names: frozenset[str]) -> None:
        self._slow = slow
        self.names = names
        self.path = getattr(slow, "path", "")
        self._fast = None
        self._constant: Any = None
        self._is_constant = False
        if isinstance(slow, Expression):
            self.source = slow.source
            self._fast = compile_fast(slow.source, MACHINE_NAMES)
        else:
            self.source = ""
            if slow.is_constant:
                self._is_constant = True
                self._constant = slow.constant
            elif len(slow.expressions) == 1 and _whole(slow):
                expr = slow.expressions[0]
                self.source = expr.source
                self._fast = compile_fast(expr.source, MACHINE_NAMES)

    def evaluate(self, act: Mapping[str, Any]) -> Any:
        """`act` may hold more names than the expression uses; CEL sees only those it uses."""
        if self._is_constant:
            return self._constant
        fast = self._fast
        if fast is not None:
            try:
                return fast(act)
            except Fallback:
                pass
        return self._slow.evaluate({n: act[n] for n in self.names if n in act})

    @property
    def is_fast(self) -> bool:
        return self._fast is not None or self._is_constant


def _whole(template: Template) -> bool:
    """Whether the template is one string that is exactly one `${{ }}` (its value is typed)."""
    fn = template._fn
    return getattr(fn, "__self__", None) is template.expressions[0]


@dataclass(frozen=True, slots=True, eq=False)
class ActionPlan:
    """One action (entry, exit or on a transition): a call with its retry policy and timeout."""

    step: StepPlan
    path: str
    # entry | exit | transition
    phase: str
    index: int
    retry: RetrySpec
    timeout: float | None
    # The tool name, provider/model or workflow, for history and metrics.
    target: str


@dataclass(frozen=True, slots=True, eq=False)
class TransitionPlan:
    index: int
    path: str
    # The target state; empty: stay (no exit, no entry).
    target: str
    guard: Compiled | None = None
    # (key, compiled value): every value sees the data before the assign.
    assign: tuple[tuple[str, Compiled], ...] = ()
    actions: tuple[ActionPlan, ...] = ()
    reenter: bool = False
    # Taking it calls nothing (no actions, no exit or entry actions, no
    # invoke), so the runtime handles it synchronously, without a coroutine per step.
    quick: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class TimerPlan:
    """An `after` timer: when it fires, its transition is tried (with its guard)."""

    index: int
    path: str
    delay: float
    # The event name the history records: `after:30m`.
    event: str
    transition: TransitionPlan


@dataclass(frozen=True, slots=True, eq=False)
class InvokePlan:
    path: str
    workflow: str
    version: int
    input: Compiled | None


@dataclass(frozen=True, slots=True, eq=False)
class StatePlan:
    name: str
    path: str
    on: dict[str, tuple[TransitionPlan, ...]] = field(default_factory=dict)
    entry: tuple[ActionPlan, ...] = ()
    exit: tuple[ActionPlan, ...] = ()
    after: tuple[TimerPlan, ...] = ()
    invoke: InvokePlan | None = None
    on_done: tuple[TransitionPlan, ...] = ()
    on_error: tuple[TransitionPlan, ...] = ()
    final: bool = False
    # The events the state accepts, sorted (GetAvailableEvents, rejection details).
    events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class MachinePlan:
    name: str
    spec: workflow_pb2.WorkflowSpec
    initial: str
    data: dict[str, Any]
    states: dict[str, StatePlan]
    input_schema: dict[str, Any] | None = None
    warnings: list[Diagnostic] = field(default_factory=list)
    # States by distance from the initial one (what `validate` prints as stages).
    stages: list[list[str]] = field(default_factory=list)
    # Whether any state's expressions read `secrets` (only then are secrets put in scope).
    uses_secrets: bool = False
