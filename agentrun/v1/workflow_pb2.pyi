import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowSpec(_message.Message):
    __slots__ = ("name", "description", "mode", "input_schema", "defaults", "timeout", "concurrency", "nodes", "edges", "output", "error_handlers", "compensation", "circuit_breakers", "initial", "data", "states", "budget")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[WorkflowSpec.Mode]
        MODE_DAG: _ClassVar[WorkflowSpec.Mode]
        MODE_STATE_MACHINE: _ClassVar[WorkflowSpec.Mode]
    MODE_UNSPECIFIED: WorkflowSpec.Mode
    MODE_DAG: WorkflowSpec.Mode
    MODE_STATE_MACHINE: WorkflowSpec.Mode
    class CircuitBreakersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CircuitBreaker
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CircuitBreaker, _Mapping]] = ...) -> None: ...
    class StatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MachineState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MachineState, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_HANDLERS_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    mode: WorkflowSpec.Mode
    input_schema: _struct_pb2.Struct
    defaults: NodeDefaults
    timeout: _duration_pb2.Duration
    concurrency: Concurrency
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    output: _struct_pb2.Value
    error_handlers: _containers.RepeatedCompositeFieldContainer[ErrorHandler]
    compensation: Compensation
    circuit_breakers: _containers.MessageMap[str, CircuitBreaker]
    initial: str
    data: _struct_pb2.Struct
    states: _containers.MessageMap[str, MachineState]
    budget: Budget
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., mode: _Optional[_Union[WorkflowSpec.Mode, str]] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., defaults: _Optional[_Union[NodeDefaults, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., concurrency: _Optional[_Union[Concurrency, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error_handlers: _Optional[_Iterable[_Union[ErrorHandler, _Mapping]]] = ..., compensation: _Optional[_Union[Compensation, _Mapping]] = ..., circuit_breakers: _Optional[_Mapping[str, CircuitBreaker]] = ..., initial: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., states: _Optional[_Mapping[str, MachineState]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class NodeDefaults(_message.Message):
    __slots__ = ("timeout", "retry")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    retry: RetryPolicy
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "backoff", "initial_interval", "max_interval", "multiplier", "jitter", "non_retryable")
    class Backoff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BACKOFF_UNSPECIFIED: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_FIXED: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_LINEAR: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_EXPONENTIAL: _ClassVar[RetryPolicy.Backoff]
    BACKOFF_UNSPECIFIED: RetryPolicy.Backoff
    BACKOFF_FIXED: RetryPolicy.Backoff
    BACKOFF_LINEAR: RetryPolicy.Backoff
    BACKOFF_EXPONENTIAL: RetryPolicy.Backoff
    class Jitter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        JITTER_UNSPECIFIED: _ClassVar[RetryPolicy.Jitter]
        JITTER_NONE: _ClassVar[RetryPolicy.Jitter]
        JITTER_FULL: _ClassVar[RetryPolicy.Jitter]
        JITTER_EQUAL: _ClassVar[RetryPolicy.Jitter]
    JITTER_UNSPECIFIED: RetryPolicy.Jitter
    JITTER_NONE: RetryPolicy.Jitter
    JITTER_FULL: RetryPolicy.Jitter
    JITTER_EQUAL: RetryPolicy.Jitter
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    INITIAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    backoff: RetryPolicy.Backoff
    initial_interval: _duration_pb2.Duration
    max_interval: _duration_pb2.Duration
    multiplier: float
    jitter: RetryPolicy.Jitter
    non_retryable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_attempts: _Optional[int] = ..., backoff: _Optional[_Union[RetryPolicy.Backoff, str]] = ..., initial_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., jitter: _Optional[_Union[RetryPolicy.Jitter, str]] = ..., non_retryable: _Optional[_Iterable[str]] = ...) -> None: ...

class Concurrency(_message.Message):
    __slots__ = ("key", "limit", "on_limit")
    class OnLimit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ON_LIMIT_UNSPECIFIED: _ClassVar[Concurrency.OnLimit]
        ON_LIMIT_QUEUE: _ClassVar[Concurrency.OnLimit]
        ON_LIMIT_CANCEL_NEWEST: _ClassVar[Concurrency.OnLimit]
        ON_LIMIT_CANCEL_OLDEST: _ClassVar[Concurrency.OnLimit]
    ON_LIMIT_UNSPECIFIED: Concurrency.OnLimit
    ON_LIMIT_QUEUE: Concurrency.OnLimit
    ON_LIMIT_CANCEL_NEWEST: Concurrency.OnLimit
    ON_LIMIT_CANCEL_OLDEST: Concurrency.OnLimit
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ON_LIMIT_FIELD_NUMBER: _ClassVar[int]
    key: str
    limit: int
    on_limit: Concurrency.OnLimit
    def __init__(self, key: _Optional[str] = ..., limit: _Optional[int] = ..., on_limit: _Optional[_Union[Concurrency.OnLimit, str]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_tokens", "max_cost", "window", "on_exhausted")
    class Window(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        WINDOW_UNSPECIFIED: _ClassVar[Budget.Window]
        WINDOW_EXECUTION: _ClassVar[Budget.Window]
        WINDOW_DAY: _ClassVar[Budget.Window]
    WINDOW_UNSPECIFIED: Budget.Window
    WINDOW_EXECUTION: Budget.Window
    WINDOW_DAY: Budget.Window
    class OnExhausted(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ON_EXHAUSTED_UNSPECIFIED: _ClassVar[Budget.OnExhausted]
        ON_EXHAUSTED_PAUSE: _ClassVar[Budget.OnExhausted]
        ON_EXHAUSTED_FAIL: _ClassVar[Budget.OnExhausted]
    ON_EXHAUSTED_UNSPECIFIED: Budget.OnExhausted
    ON_EXHAUSTED_PAUSE: Budget.OnExhausted
    ON_EXHAUSTED_FAIL: Budget.OnExhausted
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ON_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    max_cost: float
    window: Budget.Window
    on_exhausted: Budget.OnExhausted
    def __init__(self, max_tokens: _Optional[int] = ..., max_cost: _Optional[float] = ..., window: _Optional[_Union[Budget.Window, str]] = ..., on_exhausted: _Optional[_Union[Budget.OnExhausted, str]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "needs", "when", "join", "timeout", "total_timeout", "retry", "output", "export_vars", "compensate", "rate_limit", "priority", "on_exhausted", "agent", "tool", "map", "switch_node", "wait", "aggregate", "workflow", "pass_node")
    class Join(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        JOIN_UNSPECIFIED: _ClassVar[Node.Join]
        JOIN_ANY: _ClassVar[Node.Join]
        JOIN_ALL: _ClassVar[Node.Join]
    JOIN_UNSPECIFIED: Node.Join
    JOIN_ANY: Node.Join
    JOIN_ALL: Node.Join
    ID_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXPORT_VARS_FIELD_NUMBER: _ClassVar[int]
    COMPENSATE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ON_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    SWITCH_NODE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    PASS_NODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    needs: _containers.RepeatedScalarFieldContainer[str]
    when: str
    join: Node.Join
    timeout: _duration_pb2.Duration
    total_timeout: _duration_pb2.Duration
    retry: RetryPolicy
    output: _struct_pb2.Value
    export_vars: _struct_pb2.Struct
    compensate: Step
    rate_limit: str
    priority: int
    on_exhausted: Budget.OnExhausted
    agent: AgentCall
    tool: ToolCall
    map: MapNode
    switch_node: SwitchNode
    wait: WaitNode
    aggregate: AggregateNode
    workflow: WorkflowCall
    pass_node: PassNode
    def __init__(self, id: _Optional[str] = ..., needs: _Optional[_Iterable[str]] = ..., when: _Optional[str] = ..., join: _Optional[_Union[Node.Join, str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., export_vars: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., compensate: _Optional[_Union[Step, _Mapping]] = ..., rate_limit: _Optional[str] = ..., priority: _Optional[int] = ..., on_exhausted: _Optional[_Union[Budget.OnExhausted, str]] = ..., agent: _Optional[_Union[AgentCall, _Mapping]] = ..., tool: _Optional[_Union[ToolCall, _Mapping]] = ..., map: _Optional[_Union[MapNode, _Mapping]] = ..., switch_node: _Optional[_Union[SwitchNode, _Mapping]] = ..., wait: _Optional[_Union[WaitNode, _Mapping]] = ..., aggregate: _Optional[_Union[AggregateNode, _Mapping]] = ..., workflow: _Optional[_Union[WorkflowCall, _Mapping]] = ..., pass_node: _Optional[_Union[PassNode, _Mapping]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("retry", "timeout", "agent", "tool", "pass_node", "workflow", "wait")
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    PASS_NODE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    retry: RetryPolicy
    timeout: _duration_pb2.Duration
    agent: AgentCall
    tool: ToolCall
    pass_node: PassNode
    workflow: WorkflowCall
    wait: WaitNode
    def __init__(self, retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., agent: _Optional[_Union[AgentCall, _Mapping]] = ..., tool: _Optional[_Union[ToolCall, _Mapping]] = ..., pass_node: _Optional[_Union[PassNode, _Mapping]] = ..., workflow: _Optional[_Union[WorkflowCall, _Mapping]] = ..., wait: _Optional[_Union[WaitNode, _Mapping]] = ...) -> None: ...

class AgentCall(_message.Message):
    __slots__ = ("model", "system", "prompt", "output_schema", "tools", "max_turns", "temperature", "max_tokens", "stream")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    model: str
    system: str
    prompt: str
    output_schema: _struct_pb2.Struct
    tools: _containers.RepeatedScalarFieldContainer[str]
    max_turns: int
    temperature: float
    max_tokens: int
    stream: bool
    def __init__(self, model: _Optional[str] = ..., system: _Optional[str] = ..., prompt: _Optional[str] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tools: _Optional[_Iterable[str]] = ..., max_turns: _Optional[int] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stream: _Optional[bool] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("name", "args", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    args: _struct_pb2.Value
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MapNode(_message.Message):
    __slots__ = ("items", "max_concurrency", "node", "workflow")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    items: str
    max_concurrency: int
    node: Step
    workflow: WorkflowCall
    def __init__(self, items: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., node: _Optional[_Union[Step, _Mapping]] = ..., workflow: _Optional[_Union[WorkflowCall, _Mapping]] = ...) -> None: ...

class SwitchNode(_message.Message):
    __slots__ = ("cases", "default_target")
    CASES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TARGET_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[SwitchCase]
    default_target: str
    def __init__(self, cases: _Optional[_Iterable[_Union[SwitchCase, _Mapping]]] = ..., default_target: _Optional[str] = ...) -> None: ...

class SwitchCase(_message.Message):
    __slots__ = ("when", "target")
    WHEN_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    when: str
    target: str
    def __init__(self, when: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class WaitNode(_message.Message):
    __slots__ = ("signal", "duration", "until", "timeout", "schema")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    signal: str
    duration: _duration_pb2.Duration
    until: str
    timeout: _duration_pb2.Duration
    schema: _struct_pb2.Struct
    def __init__(self, signal: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., until: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AggregateNode(_message.Message):
    __slots__ = ("strategy", "expr")
    class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STRATEGY_UNSPECIFIED: _ClassVar[AggregateNode.Strategy]
        STRATEGY_MERGE: _ClassVar[AggregateNode.Strategy]
        STRATEGY_CONCAT: _ClassVar[AggregateNode.Strategy]
        STRATEGY_FIRST: _ClassVar[AggregateNode.Strategy]
        STRATEGY_VOTE: _ClassVar[AggregateNode.Strategy]
        STRATEGY_EXPR: _ClassVar[AggregateNode.Strategy]
    STRATEGY_UNSPECIFIED: AggregateNode.Strategy
    STRATEGY_MERGE: AggregateNode.Strategy
    STRATEGY_CONCAT: AggregateNode.Strategy
    STRATEGY_FIRST: AggregateNode.Strategy
    STRATEGY_VOTE: AggregateNode.Strategy
    STRATEGY_EXPR: AggregateNode.Strategy
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EXPR_FIELD_NUMBER: _ClassVar[int]
    strategy: AggregateNode.Strategy
    expr: str
    def __init__(self, strategy: _Optional[_Union[AggregateNode.Strategy, str]] = ..., expr: _Optional[str] = ...) -> None: ...

class WorkflowCall(_message.Message):
    __slots__ = ("name", "version", "input")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    input: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class PassNode(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Value
    def __init__(self, value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("from_node", "to", "when", "input")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    to: str
    when: str
    input: _struct_pb2.Value
    def __init__(self, from_node: _Optional[str] = ..., to: _Optional[str] = ..., when: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ErrorHandler(_message.Message):
    __slots__ = ("match", "action", "retry", "output", "fallback", "timeout", "on_timeout")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ErrorHandler.Action]
        ACTION_RETRY: _ClassVar[ErrorHandler.Action]
        ACTION_SKIP: _ClassVar[ErrorHandler.Action]
        ACTION_FALLBACK: _ClassVar[ErrorHandler.Action]
        ACTION_COMPENSATE: _ClassVar[ErrorHandler.Action]
        ACTION_ESCALATE: _ClassVar[ErrorHandler.Action]
    ACTION_UNSPECIFIED: ErrorHandler.Action
    ACTION_RETRY: ErrorHandler.Action
    ACTION_SKIP: ErrorHandler.Action
    ACTION_FALLBACK: ErrorHandler.Action
    ACTION_COMPENSATE: ErrorHandler.Action
    ACTION_ESCALATE: ErrorHandler.Action
    class OnTimeout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ON_TIMEOUT_UNSPECIFIED: _ClassVar[ErrorHandler.OnTimeout]
        ON_TIMEOUT_FAIL: _ClassVar[ErrorHandler.OnTimeout]
        ON_TIMEOUT_SKIP: _ClassVar[ErrorHandler.OnTimeout]
        ON_TIMEOUT_RETRY: _ClassVar[ErrorHandler.OnTimeout]
    ON_TIMEOUT_UNSPECIFIED: ErrorHandler.OnTimeout
    ON_TIMEOUT_FAIL: ErrorHandler.OnTimeout
    ON_TIMEOUT_SKIP: ErrorHandler.OnTimeout
    ON_TIMEOUT_RETRY: ErrorHandler.OnTimeout
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    match: ErrorMatch
    action: ErrorHandler.Action
    retry: RetryPolicy
    output: _struct_pb2.Value
    fallback: Step
    timeout: _duration_pb2.Duration
    on_timeout: ErrorHandler.OnTimeout
    def __init__(self, match: _Optional[_Union[ErrorMatch, _Mapping]] = ..., action: _Optional[_Union[ErrorHandler.Action, str]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., fallback: _Optional[_Union[Step, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., on_timeout: _Optional[_Union[ErrorHandler.OnTimeout, str]] = ...) -> None: ...

class ErrorMatch(_message.Message):
    __slots__ = ("nodes", "errors")
    NODES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    nodes: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nodes: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class Compensation(_message.Message):
    __slots__ = ("strategy",)
    class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STRATEGY_UNSPECIFIED: _ClassVar[Compensation.Strategy]
        STRATEGY_REVERSE: _ClassVar[Compensation.Strategy]
        STRATEGY_SEQUENTIAL: _ClassVar[Compensation.Strategy]
        STRATEGY_PARALLEL: _ClassVar[Compensation.Strategy]
    STRATEGY_UNSPECIFIED: Compensation.Strategy
    STRATEGY_REVERSE: Compensation.Strategy
    STRATEGY_SEQUENTIAL: Compensation.Strategy
    STRATEGY_PARALLEL: Compensation.Strategy
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    strategy: Compensation.Strategy
    def __init__(self, strategy: _Optional[_Union[Compensation.Strategy, str]] = ...) -> None: ...

class CircuitBreaker(_message.Message):
    __slots__ = ("failure_threshold", "window", "reset_timeout", "half_open_calls")
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    RESET_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_CALLS_FIELD_NUMBER: _ClassVar[int]
    failure_threshold: int
    window: _duration_pb2.Duration
    reset_timeout: _duration_pb2.Duration
    half_open_calls: int
    def __init__(self, failure_threshold: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reset_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., half_open_calls: _Optional[int] = ...) -> None: ...

class MachineState(_message.Message):
    __slots__ = ("on", "entry", "exit", "after", "invoke", "on_done", "on_error", "is_final")
    class OnEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Transitions
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Transitions, _Mapping]] = ...) -> None: ...
    ON_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    ON_DONE_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    on: _containers.MessageMap[str, Transitions]
    entry: _containers.RepeatedCompositeFieldContainer[Step]
    exit: _containers.RepeatedCompositeFieldContainer[Step]
    after: _containers.RepeatedCompositeFieldContainer[DelayedTransition]
    invoke: WorkflowCall
    on_done: Transition
    on_error: Transition
    is_final: bool
    def __init__(self, on: _Optional[_Mapping[str, Transitions]] = ..., entry: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., exit: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., after: _Optional[_Iterable[_Union[DelayedTransition, _Mapping]]] = ..., invoke: _Optional[_Union[WorkflowCall, _Mapping]] = ..., on_done: _Optional[_Union[Transition, _Mapping]] = ..., on_error: _Optional[_Union[Transition, _Mapping]] = ..., is_final: _Optional[bool] = ...) -> None: ...

class Transitions(_message.Message):
    __slots__ = ("transitions",)
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[Transition]
    def __init__(self, transitions: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("guard", "target", "assign", "actions", "reenter")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REENTER_FIELD_NUMBER: _ClassVar[int]
    guard: str
    target: str
    assign: _struct_pb2.Struct
    actions: _containers.RepeatedCompositeFieldContainer[Step]
    reenter: bool
    def __init__(self, guard: _Optional[str] = ..., target: _Optional[str] = ..., assign: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., reenter: _Optional[bool] = ...) -> None: ...

class DelayedTransition(_message.Message):
    __slots__ = ("delay", "guard", "target", "assign", "actions", "reenter")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REENTER_FIELD_NUMBER: _ClassVar[int]
    delay: _duration_pb2.Duration
    guard: str
    target: str
    assign: _struct_pb2.Struct
    actions: _containers.RepeatedCompositeFieldContainer[Step]
    reenter: bool
    def __init__(self, delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., guard: _Optional[str] = ..., target: _Optional[str] = ..., assign: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., reenter: _Optional[bool] = ...) -> None: ...
