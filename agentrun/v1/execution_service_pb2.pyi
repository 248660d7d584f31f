import datetime

from agentrun.v1 import execution_pb2 as _execution_pb2
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

class ExecutionOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_ORDER_UNSPECIFIED: _ClassVar[ExecutionOrder]
    EXECUTION_ORDER_OLDEST_FIRST: _ClassVar[ExecutionOrder]
    EXECUTION_ORDER_NEWEST_FIRST: _ClassVar[ExecutionOrder]
EXECUTION_ORDER_UNSPECIFIED: ExecutionOrder
EXECUTION_ORDER_OLDEST_FIRST: ExecutionOrder
EXECUTION_ORDER_NEWEST_FIRST: ExecutionOrder

class StartExecutionRequest(_message.Message):
    __slots__ = ("workflow", "version", "input", "request_id", "priority", "wait", "wait_timeout")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    version: int
    input: _struct_pb2.Value
    request_id: str
    priority: int
    wait: bool
    wait_timeout: _duration_pb2.Duration
    def __init__(self, workflow: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., request_id: _Optional[str] = ..., priority: _Optional[int] = ..., wait: _Optional[bool] = ..., wait_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StartExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("name", "include_nodes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_nodes: bool
    def __init__(self, name: _Optional[str] = ..., include_nodes: _Optional[bool] = ...) -> None: ...

class GetExecutionResponse(_message.Message):
    __slots__ = ("execution", "nodes")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    nodes: _containers.RepeatedCompositeFieldContainer[_execution_pb2.NodeExecution]
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[_execution_pb2.NodeExecution, _Mapping]]] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "created_after", "created_before", "order")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    order: ExecutionOrder
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order: _Optional[_Union[ExecutionOrder, str]] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[_execution_pb2.Execution]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[_execution_pb2.Execution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("name", "compensate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPENSATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    compensate: bool
    def __init__(self, name: _Optional[str] = ..., compensate: _Optional[bool] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class PauseExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PauseExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class ResumeExecutionRequest(_message.Message):
    __slots__ = ("name", "node_id", "args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    node_id: str
    args: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., node_id: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ResumeExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class SignalExecutionRequest(_message.Message):
    __slots__ = ("name", "signal", "data", "signal_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    signal: str
    data: _struct_pb2.Value
    signal_id: str
    def __init__(self, name: _Optional[str] = ..., signal: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., signal_id: _Optional[str] = ...) -> None: ...

class SignalExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class RerunExecutionRequest(_message.Message):
    __slots__ = ("name", "from_node_id", "request_id", "input", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_node_id: str
    request_id: str
    input: _struct_pb2.Value
    version: int
    def __init__(self, name: _Optional[str] = ..., from_node_id: _Optional[str] = ..., request_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class RerunExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ...) -> None: ...

class ListExecutionEventsRequest(_message.Message):
    __slots__ = ("parent", "after_sequence", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    after_sequence: int
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExecutionEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_execution_pb2.ExecutionEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_execution_pb2.ExecutionEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExecutionRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchExecutionResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _execution_pb2.ExecutionEvent
    def __init__(self, event: _Optional[_Union[_execution_pb2.ExecutionEvent, _Mapping]] = ...) -> None: ...

class GetExecutionTraceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetExecutionTraceResponse(_message.Message):
    __slots__ = ("trace",)
    TRACE_FIELD_NUMBER: _ClassVar[int]
    trace: _execution_pb2.ExecutionTrace
    def __init__(self, trace: _Optional[_Union[_execution_pb2.ExecutionTrace, _Mapping]] = ...) -> None: ...

class ListWaitsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWaitsResponse(_message.Message):
    __slots__ = ("waits", "next_page_token")
    WAITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    waits: _containers.RepeatedCompositeFieldContainer[_execution_pb2.Wait]
    next_page_token: str
    def __init__(self, waits: _Optional[_Iterable[_Union[_execution_pb2.Wait, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AnswerWaitRequest(_message.Message):
    __slots__ = ("wait_id", "token", "data")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    token: str
    data: _struct_pb2.Value
    def __init__(self, wait_id: _Optional[str] = ..., token: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class AnswerWaitResponse(_message.Message):
    __slots__ = ("execution", "wait")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    execution: _execution_pb2.Execution
    wait: _execution_pb2.Wait
    def __init__(self, execution: _Optional[_Union[_execution_pb2.Execution, _Mapping]] = ..., wait: _Optional[_Union[_execution_pb2.Wait, _Mapping]] = ...) -> None: ...

class ControlExecutionsRequest(_message.Message):
    __slots__ = ("action", "filter", "page_size", "page_token", "compensate")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ControlExecutionsRequest.Action]
        ACTION_PAUSE: _ClassVar[ControlExecutionsRequest.Action]
        ACTION_RESUME: _ClassVar[ControlExecutionsRequest.Action]
        ACTION_CANCEL: _ClassVar[ControlExecutionsRequest.Action]
    ACTION_UNSPECIFIED: ControlExecutionsRequest.Action
    ACTION_PAUSE: ControlExecutionsRequest.Action
    ACTION_RESUME: ControlExecutionsRequest.Action
    ACTION_CANCEL: ControlExecutionsRequest.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMPENSATE_FIELD_NUMBER: _ClassVar[int]
    action: ControlExecutionsRequest.Action
    filter: str
    page_size: int
    page_token: str
    compensate: bool
    def __init__(self, action: _Optional[_Union[ControlExecutionsRequest.Action, str]] = ..., filter: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., compensate: _Optional[bool] = ...) -> None: ...

class ControlExecutionsResponse(_message.Message):
    __slots__ = ("outcomes", "next_page_token")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ControlOutcome]
    next_page_token: str
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ControlOutcome, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ControlOutcome(_message.Message):
    __slots__ = ("execution", "done", "state", "reason", "message")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    execution: str
    done: bool
    state: _execution_pb2.Execution.State
    reason: str
    message: str
    def __init__(self, execution: _Optional[str] = ..., done: _Optional[bool] = ..., state: _Optional[_Union[_execution_pb2.Execution.State, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
