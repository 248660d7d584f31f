"""What the engine calls out to: tools and agent providers.

The engine depends on these small interfaces only; `agentrun.integrations` implements them
(built-in tools, the tool registry, mock and OpenAI-compatible providers) and whoever builds the
engine (server, CLI, tests) passes them in.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ToolFailure(Exception):
    """Raised by a tool or provider to fail the call with an error `type` from the taxonomy
    (`tool_error`, `invalid_args`, `rate_limited`, ...) or a code of its own (`payments.declined`)."""

    def __init__(
        self,
        type: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.details = dict(details or {})
        self.retry_after = retry_after
        # False: the attempt is final whatever the retry policy says (a remote worker's
        # typed error that says so).
        self.retryable = retryable


class Effect(enum.StrEnum):
    """What a repeated call does; an `irreversible` tool is never retried automatically."""

    PURE = "pure"
    IDEMPOTENT = "idempotent"
    COMPENSABLE = "compensable"
    IRREVERSIBLE = "irreversible"


@dataclass(frozen=True, slots=True, init=False)
class CallContext:
    """Facts about the call a tool may use: the idempotency key stays the same across retries
    of one call (`execution/node`, plus `/index` inside a map); `attempt` counts from 1."""

    execution_id: str
    node_id: str
    attempt: int
    idempotency_key: str
    tenant: str = "default"
    secrets: Mapping[str, str] = field(default_factory=dict)
    # Appends an execution event for this node (`agent.usage` with token counts,
    # `agent.tool_call`, ...), committed with the run's next batch. A provider emits each
    # streamed piece of text as `agent.delta` {turn, text} as it arrives: the engine
    # coalesces, numbers and redacts them (agentrun/engine/runtime/deltas.py).
    emit: Callable[[str, dict[str, Any]], None] | None = None
    # The labels the step asked for (`tool: {labels: {region: eu}}`): remote tools route by them.
    labels: Mapping[str, str] = field(default_factory=dict)
    # When the step's timeout fires, in epoch seconds (None: no timeout); set by `call_tool`.
    deadline: float | None = None

    def __init__(
        self,
        execution_id: str,
        node_id: str,
        attempt: int,
        idempotency_key: str,
        tenant: str = "default",
        secrets: Mapping[str, str] | None = None,
        emit: Callable[[str, dict[str, Any]], None] | None = None,
        labels: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> None:
        # Each field through its slot's own setter (below): a frozen dataclass's generated
        # __init__ goes through `object.__setattr__`, which looks each name up on the type;
        # the engine makes a `CallContext` for every call.
        _set_execution_id(self, execution_id)
        _set_node_id(self, node_id)
        _set_attempt(self, attempt)
        _set_idempotency_key(self, idempotency_key)
        _set_tenant(self, tenant)
        _set_secrets(self, {} if secrets is None else secrets)
        _set_emit(self, emit)
        _set_labels(self, {} if labels is None else labels)
        _set_deadline(self, deadline)


(
    _set_execution_id,
    _set_node_id,
    _set_attempt,
    _set_idempotency_key,
    _set_tenant,
    _set_secrets,
    _set_emit,
    _set_labels,
    _set_deadline,
) = (
    CallContext.__dict__[name].__set__
    for name in (
        "execution_id",
        "node_id",
        "attempt",
        "idempotency_key",
        "tenant",
        "secrets",
        "emit",
        "labels",
        "deadline",
    )
)


class Tool(abc.ABC):
    name: str
    description: str = ""
    # JSON Schema of the args; None accepts anything.
    args_schema: Mapping[str, Any] | None = None
    result_schema: Mapping[str, Any] | None = None
    effect: Effect = Effect.IDEMPOTENT
    # True when `call` never suspends (no I/O, no sleep, nothing awaited that waits): the
    # engine then runs it on the execution's own loop instead of in a task of its own, which
    # is most of such a step's cost; a timeout cannot interrupt it, and a call that suspends
    # after all fails its attempt (`internal`).
    synchronous: bool = False

    @abc.abstractmethod
    async def call(self, args: Any, ctx: CallContext) -> Any:
        """Performs the call; raise ToolFailure for a typed failure. Must honour cancellation."""


class ToolRegistry(abc.ABC):
    @abc.abstractmethod
    def get(self, name: str) -> Tool | None: ...

    @abc.abstractmethod
    def names(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class AgentRequest:
    model: str  # the part after `provider/`
    prompt: str
    system: str = ""
    output_schema: Mapping[str, Any] | None = None
    tools: tuple[str, ...] = ()
    max_turns: int = 0
    temperature: float | None = None
    max_tokens: int = 0
    # Whether to stream the answer (`agent.delta` pieces through ctx.emit); None: the
    # provider's default.
    stream: bool | None = None


class AgentProvider(abc.ABC):
    name: str

    @abc.abstractmethod
    def knows_model(self, model: str) -> bool:
        """Whether `model` can be served (checked when a workflow is validated)."""

    @abc.abstractmethod
    async def complete(self, request: AgentRequest, ctx: CallContext) -> Any:
        """The answer as a JSON value: `{text: ...}` or the structured object."""


class AgentProviders(abc.ABC):
    @abc.abstractmethod
    def get(self, provider: str) -> AgentProvider | None: ...
