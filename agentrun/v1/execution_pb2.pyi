import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Execution(_message.Message):
    __slots__ = ("name", "workflow", "workflow_version", "state", "input", "output", "error", "vars", "priority", "request_id", "parent", "parent_node_id", "create_time", "start_time", "end_time", "expire_time", "last_sequence", "labels")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Execution.State]
        STATE_PENDING: _ClassVar[Execution.State]
        STATE_RUNNING: _ClassVar[Execution.State]
        STATE_PAUSED: _ClassVar[Execution.State]
        STATE_WAITING: _ClassVar[Execution.State]
        STATE_ESCALATED: _ClassVar[Execution.State]
        STATE_SUCCEEDED: _ClassVar[Execution.State]
        STATE_FAILED: _ClassVar[Execution.State]
        STATE_CANCELLED: _ClassVar[Execution.State]
        STATE_COMPENSATING: _ClassVar[Execution.State]
        STATE_COMPENSATED: _ClassVar[Execution.State]
        STATE_COMPENSATION_FAILED: _ClassVar[Execution.State]
        STATE_TIMED_OUT: _ClassVar[Execution.State]
    STATE_UNSPECIFIED: Execution.State
    STATE_PENDING: Execution.State
    STATE_RUNNING: Execution.State
    STATE_PAUSED: Execution.State
    STATE_WAITING: Execution.State
    STATE_ESCALATED: Execution.State
    STATE_SUCCEEDED: Execution.State
    STATE_FAILED: Execution.State
    STATE_CANCELLED: Execution.State
    STATE_COMPENSATING: Execution.State
    STATE_COMPENSATED: Execution.State
    STATE_COMPENSATION_FAILED: Execution.State
    STATE_TIMED_OUT: Execution.State
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    workflow: str
    workflow_version: int
    state: Execution.State
    input: _struct_pb2.Value
    output: _struct_pb2.Value
    error: ExecutionError
    vars: _struct_pb2.Struct
    priority: int
    request_id: str
    parent: str
    parent_node_id: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    last_sequence: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., workflow: _Optional[str] = ..., workflow_version: _Optional[int] = ..., state: _Optional[_Union[Execution.State, str]] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., vars: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., priority: _Optional[int] = ..., request_id: _Optional[str] = ..., parent: _Optional[str] = ..., parent_node_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExecutionError(_message.Message):
    __slots__ = ("type", "message", "node_id", "details")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    node_id: str
    details: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class NodeExecution(_message.Message):
    __slots__ = ("node_id", "state", "attempt", "input", "output", "error", "skip_reason", "start_time", "end_time", "wake_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[NodeExecution.State]
        STATE_PENDING: _ClassVar[NodeExecution.State]
        STATE_READY: _ClassVar[NodeExecution.State]
        STATE_RUNNING: _ClassVar[NodeExecution.State]
        STATE_RETRYING: _ClassVar[NodeExecution.State]
        STATE_WAITING: _ClassVar[NodeExecution.State]
        STATE_ESCALATED: _ClassVar[NodeExecution.State]
        STATE_SUCCEEDED: _ClassVar[NodeExecution.State]
        STATE_FAILED: _ClassVar[NodeExecution.State]
        STATE_SKIPPED: _ClassVar[NodeExecution.State]
        STATE_CANCELLED: _ClassVar[NodeExecution.State]
        STATE_COMPENSATING: _ClassVar[NodeExecution.State]
        STATE_COMPENSATED: _ClassVar[NodeExecution.State]
        STATE_COMPENSATION_FAILED: _ClassVar[NodeExecution.State]
    STATE_UNSPECIFIED: NodeExecution.State
    STATE_PENDING: NodeExecution.State
    STATE_READY: NodeExecution.State
    STATE_RUNNING: NodeExecution.State
    STATE_RETRYING: NodeExecution.State
    STATE_WAITING: NodeExecution.State
    STATE_ESCALATED: NodeExecution.State
    STATE_SUCCEEDED: NodeExecution.State
    STATE_FAILED: NodeExecution.State
    STATE_SKIPPED: NodeExecution.State
    STATE_CANCELLED: NodeExecution.State
    STATE_COMPENSATING: NodeExecution.State
    STATE_COMPENSATED: NodeExecution.State
    STATE_COMPENSATION_FAILED: NodeExecution.State
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    WAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: NodeExecution.State
    attempt: int
    input: _struct_pb2.Value
    output: _struct_pb2.Value
    error: ExecutionError
    skip_reason: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    wake_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[NodeExecution.State, str]] = ..., attempt: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., skip_reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wake_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExecutionEvent(_message.Message):
    __slots__ = ("execution", "sequence", "type", "time", "node_id", "data", "execution_state_changed", "node_started", "node_succeeded", "node_failed", "node_retrying", "node_skipped", "node_state_changed", "signal_received")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    NODE_STARTED_FIELD_NUMBER: _ClassVar[int]
    NODE_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    NODE_FAILED_FIELD_NUMBER: _ClassVar[int]
    NODE_RETRYING_FIELD_NUMBER: _ClassVar[int]
    NODE_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    NODE_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    execution: str
    sequence: int
    type: str
    time: _timestamp_pb2.Timestamp
    node_id: str
    data: _struct_pb2.Struct
    execution_state_changed: ExecutionStateChanged
    node_started: NodeStarted
    node_succeeded: NodeSucceeded
    node_failed: NodeFailed
    node_retrying: NodeRetrying
    node_skipped: NodeSkipped
    node_state_changed: NodeStateChanged
    signal_received: SignalReceived
    def __init__(self, execution: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., execution_state_changed: _Optional[_Union[ExecutionStateChanged, _Mapping]] = ..., node_started: _Optional[_Union[NodeStarted, _Mapping]] = ..., node_succeeded: _Optional[_Union[NodeSucceeded, _Mapping]] = ..., node_failed: _Optional[_Union[NodeFailed, _Mapping]] = ..., node_retrying: _Optional[_Union[NodeRetrying, _Mapping]] = ..., node_skipped: _Optional[_Union[NodeSkipped, _Mapping]] = ..., node_state_changed: _Optional[_Union[NodeStateChanged, _Mapping]] = ..., signal_received: _Optional[_Union[SignalReceived, _Mapping]] = ...) -> None: ...

class ExecutionStateChanged(_message.Message):
    __slots__ = ("state", "output", "error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    state: Execution.State
    output: _struct_pb2.Value
    error: ExecutionError
    def __init__(self, state: _Optional[_Union[Execution.State, str]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ...) -> None: ...

class NodeStarted(_message.Message):
    __slots__ = ("attempt", "input")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    input: _struct_pb2.Value
    def __init__(self, attempt: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class NodeSucceeded(_message.Message):
    __slots__ = ("attempt", "output")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    output: _struct_pb2.Value
    def __init__(self, attempt: _Optional[int] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class NodeFailed(_message.Message):
    __slots__ = ("attempt", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    error: ExecutionError
    def __init__(self, attempt: _Optional[int] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ...) -> None: ...

class NodeRetrying(_message.Message):
    __slots__ = ("attempt", "error", "delay")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    error: ExecutionError
    delay: _duration_pb2.Duration
    def __init__(self, attempt: _Optional[int] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class NodeSkipped(_message.Message):
    __slots__ = ("skip_reason", "output")
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    skip_reason: str
    output: _struct_pb2.Value
    def __init__(self, skip_reason: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class NodeStateChanged(_message.Message):
    __slots__ = ("state", "attempt")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    state: NodeExecution.State
    attempt: int
    def __init__(self, state: _Optional[_Union[NodeExecution.State, str]] = ..., attempt: _Optional[int] = ...) -> None: ...

class SignalReceived(_message.Message):
    __slots__ = ("signal", "data", "signal_id")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    signal: str
    data: _struct_pb2.Value
    signal_id: str
    def __init__(self, signal: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., signal_id: _Optional[str] = ...) -> None: ...

class ExecutionTrace(_message.Message):
    __slots__ = ("execution", "trace_id", "nodes", "usage")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    trace_id: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeTrace]
    usage: _containers.ScalarMap[str, float]
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ..., trace_id: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeTrace, _Mapping]]] = ..., usage: _Optional[_Mapping[str, float]] = ...) -> None: ...

class NodeTrace(_message.Message):
    __slots__ = ("node_id", "state", "ready_time", "end_time", "attempts", "queue_duration", "usage", "skip_reason")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DURATION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: NodeExecution.State
    ready_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    attempts: _containers.RepeatedCompositeFieldContainer[AttemptTrace]
    queue_duration: _duration_pb2.Duration
    usage: _containers.ScalarMap[str, float]
    skip_reason: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[NodeExecution.State, str]] = ..., ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[AttemptTrace, _Mapping]]] = ..., queue_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., usage: _Optional[_Mapping[str, float]] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class AttemptTrace(_message.Message):
    __slots__ = ("attempt", "start_time", "end_time", "outcome", "error", "queue_duration", "rate_limited", "retry_delay")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DURATION_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    outcome: NodeExecution.State
    error: ExecutionError
    queue_duration: _duration_pb2.Duration
    rate_limited: bool
    retry_delay: _duration_pb2.Duration
    def __init__(self, attempt: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[NodeExecution.State, str]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., queue_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rate_limited: _Optional[bool] = ..., retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Wait(_message.Message):
    __slots__ = ("wait_id", "execution", "node_id", "map_index", "attempt", "signal", "start_time", "timeout_time", "schema", "workflow")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MAP_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_TIME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    execution: str
    node_id: str
    map_index: int
    attempt: int
    signal: str
    start_time: _timestamp_pb2.Timestamp
    timeout_time: _timestamp_pb2.Timestamp
    schema: _struct_pb2.Struct
    workflow: str
    def __init__(self, wait_id: _Optional[str] = ..., execution: _Optional[str] = ..., node_id: _Optional[str] = ..., map_index: _Optional[int] = ..., attempt: _Optional[int] = ..., signal: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeout_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., workflow: _Optional[str] = ...) -> None: ...
