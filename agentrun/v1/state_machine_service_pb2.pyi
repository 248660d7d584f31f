from agentrun.v1 import state_machine_pb2 as _state_machine_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateInstanceRequest(_message.Message):
    __slots__ = ("workflow", "version", "input", "request_id", "data")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    version: int
    input: _struct_pb2.Value
    request_id: str
    data: _struct_pb2.Struct
    def __init__(self, workflow: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., request_id: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _state_machine_pb2.StateMachineInstance
    def __init__(self, instance: _Optional[_Union[_state_machine_pb2.StateMachineInstance, _Mapping]] = ...) -> None: ...

class GetInstanceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _state_machine_pb2.StateMachineInstance
    def __init__(self, instance: _Optional[_Union[_state_machine_pb2.StateMachineInstance, _Mapping]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_state_machine_pb2.StateMachineInstance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[_state_machine_pb2.StateMachineInstance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SendEventRequest(_message.Message):
    __slots__ = ("name", "event", "data", "event_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    event: str
    data: _struct_pb2.Value
    event_id: str
    def __init__(self, name: _Optional[str] = ..., event: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class SendEventResponse(_message.Message):
    __slots__ = ("instance", "transition")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    instance: _state_machine_pb2.StateMachineInstance
    transition: _state_machine_pb2.InstanceTransition
    def __init__(self, instance: _Optional[_Union[_state_machine_pb2.StateMachineInstance, _Mapping]] = ..., transition: _Optional[_Union[_state_machine_pb2.InstanceTransition, _Mapping]] = ...) -> None: ...

class ListInstanceHistoryRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "after_sequence")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    after_sequence: int
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class ListInstanceHistoryResponse(_message.Message):
    __slots__ = ("transitions", "next_page_token")
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[_state_machine_pb2.InstanceTransition]
    next_page_token: str
    def __init__(self, transitions: _Optional[_Iterable[_Union[_state_machine_pb2.InstanceTransition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAvailableEventsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAvailableEventsResponse(_message.Message):
    __slots__ = ("current_state", "events", "state")
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    current_state: str
    events: _containers.RepeatedScalarFieldContainer[str]
    state: _state_machine_pb2.StateMachineInstance.State
    def __init__(self, current_state: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[_state_machine_pb2.StateMachineInstance.State, str]] = ...) -> None: ...

class WatchInstanceRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchInstanceResponse(_message.Message):
    __slots__ = ("transition",)
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    transition: _state_machine_pb2.InstanceTransition
    def __init__(self, transition: _Optional[_Union[_state_machine_pb2.InstanceTransition, _Mapping]] = ...) -> None: ...

class CancelInstanceRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _state_machine_pb2.StateMachineInstance
    def __init__(self, instance: _Optional[_Union[_state_machine_pb2.StateMachineInstance, _Mapping]] = ...) -> None: ...
