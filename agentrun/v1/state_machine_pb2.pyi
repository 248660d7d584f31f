import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateMachineInstance(_message.Message):
    __slots__ = ("name", "workflow", "workflow_version", "state", "current_state", "data", "input", "error", "request_id", "parent", "parent_node_id", "create_time", "update_time", "end_time", "last_sequence", "invoked_execution", "labels")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[StateMachineInstance.State]
        STATE_ACTIVE: _ClassVar[StateMachineInstance.State]
        STATE_COMPLETED: _ClassVar[StateMachineInstance.State]
        STATE_FAILED: _ClassVar[StateMachineInstance.State]
        STATE_CANCELLED: _ClassVar[StateMachineInstance.State]
    STATE_UNSPECIFIED: StateMachineInstance.State
    STATE_ACTIVE: StateMachineInstance.State
    STATE_COMPLETED: StateMachineInstance.State
    STATE_FAILED: StateMachineInstance.State
    STATE_CANCELLED: StateMachineInstance.State
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
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INVOKED_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    workflow: str
    workflow_version: int
    state: StateMachineInstance.State
    current_state: str
    data: _struct_pb2.Struct
    input: _struct_pb2.Value
    error: StateMachineError
    request_id: str
    parent: str
    parent_node_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    last_sequence: int
    invoked_execution: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., workflow: _Optional[str] = ..., workflow_version: _Optional[int] = ..., state: _Optional[_Union[StateMachineInstance.State, str]] = ..., current_state: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[StateMachineError, _Mapping]] = ..., request_id: _Optional[str] = ..., parent: _Optional[str] = ..., parent_node_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ..., invoked_execution: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StateMachineError(_message.Message):
    __slots__ = ("type", "message", "state", "details")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    state: str
    details: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., state: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class InstanceTransition(_message.Message):
    __slots__ = ("instance", "sequence", "kind", "time", "event", "event_id", "event_data", "from_state", "to_state", "transition_index", "actions", "assigned", "instance_state", "error", "reentered")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[InstanceTransition.Kind]
        KIND_CREATED: _ClassVar[InstanceTransition.Kind]
        KIND_TRANSITION: _ClassVar[InstanceTransition.Kind]
        KIND_NO_TRANSITION: _ClassVar[InstanceTransition.Kind]
        KIND_REJECTED: _ClassVar[InstanceTransition.Kind]
        KIND_ABORTED: _ClassVar[InstanceTransition.Kind]
        KIND_CANCELLED: _ClassVar[InstanceTransition.Kind]
    KIND_UNSPECIFIED: InstanceTransition.Kind
    KIND_CREATED: InstanceTransition.Kind
    KIND_TRANSITION: InstanceTransition.Kind
    KIND_NO_TRANSITION: InstanceTransition.Kind
    KIND_REJECTED: InstanceTransition.Kind
    KIND_ABORTED: InstanceTransition.Kind
    KIND_CANCELLED: InstanceTransition.Kind
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATA_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_INDEX_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REENTERED_FIELD_NUMBER: _ClassVar[int]
    instance: str
    sequence: int
    kind: InstanceTransition.Kind
    time: _timestamp_pb2.Timestamp
    event: str
    event_id: str
    event_data: _struct_pb2.Value
    from_state: str
    to_state: str
    transition_index: int
    actions: _containers.RepeatedCompositeFieldContainer[ActionResult]
    assigned: _struct_pb2.Struct
    instance_state: StateMachineInstance.State
    error: StateMachineError
    reentered: bool
    def __init__(self, instance: _Optional[str] = ..., sequence: _Optional[int] = ..., kind: _Optional[_Union[InstanceTransition.Kind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., event_id: _Optional[str] = ..., event_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., transition_index: _Optional[int] = ..., actions: _Optional[_Iterable[_Union[ActionResult, _Mapping]]] = ..., assigned: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., instance_state: _Optional[_Union[StateMachineInstance.State, str]] = ..., error: _Optional[_Union[StateMachineError, _Mapping]] = ..., reentered: _Optional[bool] = ...) -> None: ...

class ActionResult(_message.Message):
    __slots__ = ("phase", "state", "index", "path", "kind", "target", "succeeded", "attempts", "output", "error", "duration_seconds")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    phase: str
    state: str
    index: int
    path: str
    kind: str
    target: str
    succeeded: bool
    attempts: int
    output: _struct_pb2.Value
    error: StateMachineError
    duration_seconds: float
    def __init__(self, phase: _Optional[str] = ..., state: _Optional[str] = ..., index: _Optional[int] = ..., path: _Optional[str] = ..., kind: _Optional[str] = ..., target: _Optional[str] = ..., succeeded: _Optional[bool] = ..., attempts: _Optional[int] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[StateMachineError, _Mapping]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...
