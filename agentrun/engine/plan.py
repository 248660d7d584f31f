"""The immutable execution plan a DAG WorkflowSpec compiles to (`DagPlan`).

The runtime reads only these objects: immutable slotted dataclasses with pre-compiled
expressions, so running a node touches no protobuf message and parses nothing. The
compiler builds each one complete (agentrun/engine/compiler.py); nothing changes a plan after.
`NodePlan` is a union of one class per kind of node (`ToolNode | AgentNode | ... |
AggregateNode`, sharing `NodeBase`), `StepPlan` one of one class per kind of call (`ToolStep |
... | WaitStep`, sharing `StepBase`): the interpreters match the class, and a plan holds only
its own kind's fields.

The classes built per node (nodes, steps, edges, switch cases) are frozen for the type checker
only (`plan_class`): a frozen dataclass sets each field through `object.__setattr__`, and a
10,000-node plan spent ~25% of its compile there (6 µs a node against 1 µs). Nothing assigns
to a plan after the compiler built it; mypy refuses any code that would.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar, dataclass_transform

from agentrun.engine.budgets import BudgetSpec
from agentrun.engine.errors import Diagnostic
from agentrun.engine.expressions import NO_NAMES, Expression, Template
from agentrun.engine.ports import AgentProvider, Tool
from agentrun.engine.retry import NO_RETRY, RetrySpec
from agentrun.v1 import workflow_pb2

_C = TypeVar("_C")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def plan_class(cls: type[_C]) -> type[_C]:
    """A slotted, keyword-only dataclass compared by identity, frozen to the type checker
    (see the module's docstring), mutable at run time."""
    return dataclass(slots=True, eq=False, kw_only=True)(cls)


# `new_plan(cls)` then `cls.__init__(obj, ...)` builds what `cls(...)` does, ~40% cheaper:
# CPython 3.11 passes the keyword arguments of `cls(...)` through `type.__call__` as a dict.
# The compiler builds a large plan's per-node objects so (nodes, plain calls, edges).
new_plan = object.__new__


@plan_class
class EdgePlan:
    source: str
    target: str
    when: Expression | None = None
    input: Template | None = None
    # Implied by a switch: taken only when the switch chose `target`.
    from_switch: bool = False


@plan_class
class StepBase:
    """A single call: a node's body, a map item's body, a compensation, a fallback or a state
    machine action. One subclass per kind; `StepPlan` is their union."""

    # The file word of the kind: data for traces, metrics and events.
    kind: ClassVar[str]
    path: str
    retry: RetrySpec | None = None
    timeout: float | None = None
    # What the step's own templates read (computed once, in __post_init__): a call's
    # activation holds these names only, so a map item's does not carry the map's `items`.
    names: frozenset[str] = field(init=False, default=frozenset())
    node_refs: frozenset[str] = field(init=False, default=frozenset())

    # The fields holding the step's own templates (what it renders when it runs).
    template_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def templates(self) -> tuple[Template, ...]:
        return tuple([getattr(self, name) for name in self.template_fields])

    def __post_init__(self) -> None:
        fields = self.template_fields
        if len(fields) == 1:  # most kinds: that template's sets, shared
            t: Template = getattr(self, fields[0])
            object.__setattr__(self, "names", t.names or NO_NAMES)
            object.__setattr__(self, "node_refs", t.node_refs or NO_NAMES)
            return
        names = refs = NO_NAMES
        for name in fields:
            t = getattr(self, name)
            # A template's own sets are shared when it is the only one that reads anything.
            if t.names:
                names = names | t.names if names else t.names
            if t.node_refs:
                refs = refs | t.node_refs if refs else t.node_refs
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "node_refs", refs)


@plan_class
class ToolStep(StepBase):
    kind: ClassVar[str] = "tool"
    template_fields: ClassVar[tuple[str, ...]] = ("args",)
    # None only in a plan that failed to compile (the unknown tool is reported).
    tool: Tool | None
    args: Template
    # Only workers offering these labels serve the call (remote tools).
    labels: dict[str, str] = field(default_factory=dict)


@plan_class
class AgentStep(StepBase):
    kind: ClassVar[str] = "agent"
    template_fields: ClassVar[tuple[str, ...]] = ("prompt", "system")
    # None only in a plan that failed to compile (the unknown provider is reported).
    provider: AgentProvider | None
    model: str
    prompt: Template
    system: Template
    output_schema: dict[str, Any] | None = None
    agent_tools: tuple[str, ...] = ()
    max_turns: int = 0
    temperature: float | None = None
    max_tokens: int = 0
    # None: the provider's default; False: no `agent.delta` events.
    stream: bool | None = None


@plan_class
class PassStep(StepBase):
    kind: ClassVar[str] = "pass"
    template_fields: ClassVar[tuple[str, ...]] = ("value",)
    value: Template


@plan_class
class WorkflowStep(StepBase):
    kind: ClassVar[str] = "workflow"
    template_fields: ClassVar[tuple[str, ...]] = ("workflow_input",)
    workflow: str
    workflow_version: int = 0
    workflow_input: Template


@plan_class
class WaitStep(StepBase):
    """A map's body only: each item waits for its own `signal`, answered per `wait_schema`."""

    kind: ClassVar[str] = "wait"
    signal: str
    wait_schema: dict[str, Any] | None = None


StepPlan: TypeAlias = ToolStep | AgentStep | PassStep | WorkflowStep | WaitStep


@plan_class
class SwitchCase:
    when: Expression
    target: str


@plan_class
class NodeBase:
    """What every node has: its place in the graph, when it runs, its policy and its outcome's
    transforms. One subclass per kind adds that kind's fields; `NodePlan` is their union."""

    # The file word of the kind (`tool`, `map`, ...): data for events and API output. Code
    # that behaves by kind matches the class instead.
    kind: ClassVar[str]
    id: str
    index: int
    path: str
    incoming: tuple[EdgePlan, ...] = ()
    outgoing: tuple[EdgePlan, ...] = ()
    when: Expression | None = None
    join_all: bool = False
    timeout: float | None = None
    total_timeout: float | None = None
    retry: RetrySpec = NO_RETRY
    output: Template | None = None
    export: dict[str, Template] | None = None
    compensate: StepPlan | None = None
    rate_limit: str = ""
    priority: int = 0
    # `pause`: spent retries (or an open breaker) pause the execution on this node; else `fail`.
    on_exhausted: str = "fail"
    # Names the node's expressions reference, for building activations.
    names: frozenset[str] = frozenset()
    node_refs: frozenset[str] = frozenset()
    # No outgoing edge: the node's outcome decides nothing after it.
    sink: bool = False


@plan_class
class StepNode(NodeBase):
    """A node that is one call (`step`, of the node's own kind): tool, agent, pass or workflow."""

    step: StepPlan


@plan_class
class ToolNode(StepNode):
    kind: ClassVar[str] = "tool"
    step: ToolStep
    # An irreversible tool is never retried automatically, whatever a policy says.
    irreversible: bool = False


@plan_class
class AgentNode(StepNode):
    """A model call; its step holds the provider, prompt and output schema."""

    kind: ClassVar[str] = "agent"
    step: AgentStep


@plan_class
class PassNode(StepNode):
    """Its step's value, computed inline in the fold's turn (no call, no scheduler slot)."""

    kind: ClassVar[str] = "pass"
    step: PassStep


@plan_class
class WorkflowNode(StepNode):
    """A child run (an execution or a state machine instance); restarts attach to it again."""

    kind: ClassVar[str] = "workflow"
    step: WorkflowStep


@plan_class
class MapNode(NodeBase):
    kind: ClassVar[str] = "map"
    items: Expression
    # The call each item makes (a wait step: each item waits for its own signal).
    body: StepPlan
    max_concurrency: int = 0


@plan_class
class SwitchNode(NodeBase):
    kind: ClassVar[str] = "switch"
    cases: tuple[SwitchCase, ...] = ()
    default: str = ""


@plan_class
class WaitNode(NodeBase):
    """A wait for a signal (`signal`), a duration, or a time (`until`): exactly one is set."""

    kind: ClassVar[str] = "wait"
    signal: str = ""
    duration: float | None = None
    until: Template | None = None
    wait_timeout: float | None = None
    # The JSON Schema of the answer to a wait for a signal (AnswerWait checks it).
    wait_schema: dict[str, Any] | None = None


@plan_class
class AggregateNode(NodeBase):
    kind: ClassVar[str] = "aggregate"
    strategy: str = "merge"
    # strategy `expr` only.
    expr: Expression | None = None


NodePlan: TypeAlias = (
    ToolNode | AgentNode | PassNode | WorkflowNode | MapNode | SwitchNode | WaitNode | AggregateNode
)
N = TypeVar("N", bound=NodeBase)


@dataclass(frozen=True, slots=True, eq=False)
class HandlerPlan:
    """One workflow error handler; `matches` is precomputed per node id by the compiler."""

    index: int
    path: str
    node_pattern: re.Pattern[str] | None
    # Error types or globs; empty: every type but `cancelled`.
    errors: tuple[str, ...]
    action: str  # retry | skip | fallback | compensate | escalate
    retry: RetrySpec | None = None
    output: Template | None = None
    fallback: StepPlan | None = None
    timeout: float | None = None
    on_timeout: str = "fail"  # fail | skip | retry

    def matches(self, node_id: str, error_type: str) -> bool:
        if self.node_pattern is not None and not self.node_pattern.fullmatch(node_id):
            return False
        if not self.errors:
            return error_type != "cancelled"
        for pattern in self.errors:
            if pattern == "*":
                if error_type != "cancelled":
                    return True
            elif fnmatch.fnmatchcase(error_type, pattern):
                return True
        return False


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    failure_threshold: int = 5
    window: float = 60.0
    reset_timeout: float = 30.0
    half_open_calls: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class DagPlan:
    """A compiled DAG workflow; `compile_workflow` returns this or a `MachinePlan`."""

    name: str
    spec: workflow_pb2.WorkflowSpec
    nodes: dict[str, NodePlan]
    # Topological order (a valid run order).
    order: list[str]
    roots: list[str]
    # Parallel stages: nodes that can run at once, in order.
    stages: list[list[str]]
    output: Template | None
    timeout: float | None
    input_schema: dict[str, Any] | None
    warnings: list[Diagnostic] = field(default_factory=list)
    concurrency_key: Template | None = None
    concurrency_limit: int = 0
    # queue | cancel_newest | cancel_oldest
    concurrency_on_limit: str = "queue"
    handlers: list[HandlerPlan] = field(default_factory=list)
    # reverse | sequential | parallel
    compensation: str = "reverse"
    breakers: dict[str, BreakerSpec] = field(default_factory=dict)
    # The workflow's `budget:` (agentrun.engine.budgets), None without one.
    budget: BudgetSpec | None = None

    def node_as(self, node_id: str, cls: type[N]) -> N:
        """The node `node_id`, which the caller knows to be a `cls` (a map item's key names a
        map node, a wait's timer a wait node); anything else is a bug, not a user error."""
        node = self.nodes[node_id]
        if not isinstance(node, cls):
            raise TypeError(f"node {node_id!r} is a {node.kind} node, not a {cls.kind} node")
        return node

    def handler_for(self, node_id: str, error_type: str) -> HandlerPlan | None:
        """The first handler that matches: FORMAT.md's "first match wins"."""
        for handler in self.handlers:
            if handler.matches(node_id, error_type):
                return handler
        return None
