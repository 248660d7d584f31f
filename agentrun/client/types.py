"""What the SDK returns: plain dataclasses and enums, never protobuf messages.

Each resource dataclass keeps the protobuf message it was read from as `.message` (ignored by
repr and ==), for callers that want the protobuf JSON mapping: `json_format.MessageToDict(
execution.message)` is what `agentrun ... --json` prints."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentrun.client._enums import label
from agentrun.v1.execution_pb2 import Execution as _Execution
from agentrun.v1.execution_pb2 import NodeExecution as _Node


class ExecutionState(enum.StrEnum):
    """agentrun.v1.Execution.State, less `STATE_`."""

    UNSPECIFIED = label(_Execution.State, _Execution.STATE_UNSPECIFIED)
    PENDING = label(_Execution.State, _Execution.STATE_PENDING)
    RUNNING = label(_Execution.State, _Execution.STATE_RUNNING)
    PAUSED = label(_Execution.State, _Execution.STATE_PAUSED)
    WAITING = label(_Execution.State, _Execution.STATE_WAITING)
    ESCALATED = label(_Execution.State, _Execution.STATE_ESCALATED)
    SUCCEEDED = label(_Execution.State, _Execution.STATE_SUCCEEDED)
    FAILED = label(_Execution.State, _Execution.STATE_FAILED)
    CANCELLED = label(_Execution.State, _Execution.STATE_CANCELLED)
    COMPENSATING = label(_Execution.State, _Execution.STATE_COMPENSATING)
    COMPENSATED = label(_Execution.State, _Execution.STATE_COMPENSATED)
    COMPENSATION_FAILED = label(_Execution.State, _Execution.STATE_COMPENSATION_FAILED)
    TIMED_OUT = label(_Execution.State, _Execution.STATE_TIMED_OUT)

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        ExecutionState.SUCCEEDED,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
        ExecutionState.COMPENSATED,
        ExecutionState.COMPENSATION_FAILED,
        ExecutionState.TIMED_OUT,
    }
)


class NodeState(enum.StrEnum):
    """agentrun.v1.NodeExecution.State, less `STATE_`."""

    UNSPECIFIED = label(_Node.State, _Node.STATE_UNSPECIFIED)
    PENDING = label(_Node.State, _Node.STATE_PENDING)
    READY = label(_Node.State, _Node.STATE_READY)
    RUNNING = label(_Node.State, _Node.STATE_RUNNING)
    RETRYING = label(_Node.State, _Node.STATE_RETRYING)
    WAITING = label(_Node.State, _Node.STATE_WAITING)
    ESCALATED = label(_Node.State, _Node.STATE_ESCALATED)
    SUCCEEDED = label(_Node.State, _Node.STATE_SUCCEEDED)
    FAILED = label(_Node.State, _Node.STATE_FAILED)
    SKIPPED = label(_Node.State, _Node.STATE_SKIPPED)
    CANCELLED = label(_Node.State, _Node.STATE_CANCELLED)
    COMPENSATING = label(_Node.State, _Node.STATE_COMPENSATING)
    COMPENSATED = label(_Node.State, _Node.STATE_COMPENSATED)
    COMPENSATION_FAILED = label(_Node.State, _Node.STATE_COMPENSATION_FAILED)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem, located by a field path such as `nodes[2].when`."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    version: int
    description: str
    # The WorkflowSpec in its protobuf JSON form (snake_case names).
    spec: dict[str, Any]
    create_time: datetime | None
    # In list_workflows: why this version cannot read the stored spec (then `spec` is empty).
    problems: list[Diagnostic] = field(default_factory=list)
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read


@dataclass(frozen=True, slots=True)
class ValidationResult:
    valid: bool
    errors: list[Diagnostic]
    warnings: list[Diagnostic]
    # Node ids by parallel stage, in order.
    stages: list[list[str]]


@dataclass(frozen=True, slots=True)
class ExecutionError:
    type: str
    message: str
    node_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeExecution:
    node_id: str
    state: NodeState
    attempt: int
    input: Any
    output: Any
    error: ExecutionError | None
    skip_reason: str
    start_time: datetime | None
    end_time: datetime | None
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    workflow: str
    workflow_version: int
    state: ExecutionState
    input: Any
    output: Any
    error: ExecutionError | None
    vars: dict[str, Any]
    priority: int
    request_id: str
    parent_id: str
    parent_node_id: str
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    expire_time: datetime | None
    last_sequence: int
    labels: dict[str, str]
    # With `get_execution(..., include_nodes=True)`.
    nodes: list[NodeExecution] = field(default_factory=list)
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read

    @property
    def name(self) -> str:
        return "executions/" + self.id

    @property
    def done(self) -> bool:
        return self.state.terminal


@dataclass(frozen=True, slots=True)
class Wait:
    """A pending wait for a signal (an approval to give): a `wait` node's, or one map item's.
    Answer it with `answer_wait(wait_id=...)`, or with the callback token its `node.waiting`
    event carries (`event.data["token"]`)."""

    # `EXECUTION/NODE/ATTEMPT` (`NODE[INDEX]` for a map item): unique to this wait.
    wait_id: str
    execution_id: str
    workflow: str
    # The wait node, or the map node whose item waits (then `map_index` is the item's).
    node_id: str
    map_index: int | None
    attempt: int
    signal: str
    start_time: datetime | None
    timeout_time: datetime | None
    # The JSON Schema the answer must satisfy; None: any value.
    schema: dict[str, Any] | None
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """What a bulk pause, resume or cancel (`control_executions`) did to one execution:
    `done`, or refused with `reason` (`ILLEGAL_TRANSITION`, ...) and `message`; `state` is
    the execution's state after it."""

    execution_id: str
    done: bool
    state: ExecutionState
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class AgentDelta:
    """A piece of an agent's answer while it is written (an `agent.delta` event): the node
    (`ID[3]` for a map item), the attempt it belongs to, its index within that attempt (from
    0, no gaps), the model call (`turn`, from 1) and the text. When the attempt fails, an
    `agent.deltas_discarded` event with that attempt follows: drop its text."""

    node_id: str
    attempt: int
    index: int
    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    execution_id: str
    # Per execution: starts at 1, only grows; resume a watch after the last one seen.
    sequence: int
    # `execution.<state>`, `node.<state>`, `signal.received`, or what a node emits while it
    # runs (`agent.delta`, `agent.deltas_discarded`, `agent.tool_call`, `agent.usage`, ...).
    type: str
    time: datetime | None
    node_id: str
    data: dict[str, Any]
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read

    @property
    def delta(self) -> AgentDelta | None:
        """This event as a piece of an agent's streamed answer, None for any other event:
        `print(event.delta.text, end="", flush=True)` prints the tokens as they come."""
        if self.type != "agent.delta":
            return None
        d = self.data
        return AgentDelta(
            self.node_id,
            int(d.get("attempt", 1)),
            int(d.get("index", 0)),
            int(d.get("turn", 1)),
            str(d.get("text", "")),
        )

    @property
    def terminal(self) -> bool:
        """True for the event that ends the execution (the last one of a watch)."""
        kind, _, what = self.type.partition(".")
        if kind != "execution":
            return False
        try:
            return ExecutionState(what.upper()).terminal
        except ValueError:
            return False
