"""The SDK for state machines: `AsyncMachinesClient` and `MachinesClient`, same methods.

Each wraps an existing client and shares its channel, API key and timeout:

```python
from agentrun.client import AsyncClient
from agentrun.client.machines import AsyncMachinesClient

async with AsyncClient("127.0.0.1:50051") as client:
    machines = AsyncMachinesClient(client)
    order = await machines.create_instance("order", {"total": 30}, request_id="order-17")
    order, step = await machines.send_event(order, "PAY", {"amount": 30}, event_id="pay-17")
    async for entry in machines.watch(order):
        print(entry.sequence, entry.event, entry.from_state, "->", entry.to_state)
```

Results are typed dataclasses (`Instance`, `Transition`, `ActionResult`); the raw stub is
`state_machine_service`. An event the current state does not accept raises `EventNotAccepted`
(an `IllegalTransition`) whose `accepted_events` lists what the state takes.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import struct_pb2

from agentrun.client import _convert as c
from agentrun.client._enums import from_proto, label
from agentrun.client.errors import AgentrunError, IllegalTransition, from_rpc_error
from agentrun.v1 import state_machine_pb2 as sm_pb
from agentrun.v1 import state_machine_service_pb2 as pb
from agentrun.v1 import state_machine_service_pb2_grpc as pb_grpc

__all__ = [
    "ActionResult",
    "AsyncMachinesClient",
    "EventNotAccepted",
    "Instance",
    "InstanceError",
    "InstanceState",
    "MachinesClient",
    "Transition",
    "TransitionKind",
]

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


_Instance = sm_pb.StateMachineInstance
_Transition = sm_pb.InstanceTransition


class InstanceState(enum.StrEnum):
    """agentrun.v1.StateMachineInstance.State, less `STATE_`."""

    ACTIVE = label(_Instance.State, _Instance.STATE_ACTIVE)
    COMPLETED = label(_Instance.State, _Instance.STATE_COMPLETED)
    FAILED = label(_Instance.State, _Instance.STATE_FAILED)
    CANCELLED = label(_Instance.State, _Instance.STATE_CANCELLED)
    UNSPECIFIED = label(_Instance.State, _Instance.STATE_UNSPECIFIED)

    @property
    def terminal(self) -> bool:
        return self in (InstanceState.COMPLETED, InstanceState.FAILED, InstanceState.CANCELLED)


class TransitionKind(enum.StrEnum):
    """agentrun.v1.InstanceTransition.Kind, less `KIND_`."""

    CREATED = label(_Transition.Kind, _Transition.KIND_CREATED)
    TRANSITION = label(_Transition.Kind, _Transition.KIND_TRANSITION)
    NO_TRANSITION = label(_Transition.Kind, _Transition.KIND_NO_TRANSITION)
    REJECTED = label(_Transition.Kind, _Transition.KIND_REJECTED)
    ABORTED = label(_Transition.Kind, _Transition.KIND_ABORTED)
    CANCELLED = label(_Transition.Kind, _Transition.KIND_CANCELLED)
    UNSPECIFIED = label(_Transition.Kind, _Transition.KIND_UNSPECIFIED)


@dataclass(frozen=True, slots=True)
class InstanceError:
    type: str
    message: str
    state: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    workflow: str
    workflow_version: int
    state: InstanceState
    current_state: str
    data: dict[str, Any]
    input: Any
    error: InstanceError | None
    request_id: str
    parent_execution: str
    created_at: datetime | None
    updated_at: datetime | None
    ended_at: datetime | None
    last_sequence: int
    invoked_execution: str
    labels: dict[str, str]
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read

    @property
    def name(self) -> str:
        return "instances/" + self.id

    @property
    def done(self) -> bool:
        return self.state.terminal


@dataclass(frozen=True, slots=True)
class ActionResult:
    phase: str
    state: str
    index: int
    path: str
    kind: str
    target: str
    succeeded: bool
    attempts: int
    output: Any
    error: InstanceError | None
    duration: float


@dataclass(frozen=True, slots=True)
class Transition:
    """One history entry: what one event did to the instance."""

    instance_id: str
    sequence: int
    kind: TransitionKind
    time: datetime | None
    event: str
    event_id: str
    event_data: Any
    from_state: str
    to_state: str
    transition_index: int | None
    actions: list[ActionResult]
    assigned: dict[str, Any] | None
    instance_state: InstanceState
    error: InstanceError | None
    reentered: bool
    message: Any = field(default=None, repr=False, compare=False)  # the protobuf read


class EventNotAccepted(IllegalTransition):
    """The instance's current state does not handle the event."""

    @property
    def accepted_events(self) -> list[str]:
        text = self.metadata.get("accepted_events", "")
        return [e for e in text.split(",") if e]


# Conversions ---------------------------------------------------------------------
def instance_name(instance: str | Instance) -> str:
    if isinstance(instance, Instance):
        return instance.name
    return instance if instance.startswith("instances/") else "instances/" + instance


def _time(ts: Any, present: bool) -> datetime | None:
    return c._time(ts, present)


def _error(msg: sm_pb.StateMachineError, present: bool) -> InstanceError | None:
    if not present:
        return None
    return InstanceError(
        msg.type,
        msg.message,
        msg.state,
        c.from_value(struct_pb2.Value(struct_value=msg.details)) or {},
    )


def _state(value: int) -> InstanceState:
    return from_proto(InstanceState, _Instance.State, value)


def to_instance(msg: sm_pb.StateMachineInstance) -> Instance:
    return Instance(
        id=msg.name.removeprefix("instances/"),
        workflow=msg.workflow.removeprefix("workflows/"),
        workflow_version=msg.workflow_version,
        state=_state(msg.state),
        current_state=msg.current_state,
        data=c.from_value(struct_pb2.Value(struct_value=msg.data)) or {},
        input=c.from_value(msg.input) if msg.HasField("input") else None,
        error=_error(msg.error, msg.HasField("error")),
        request_id=msg.request_id,
        parent_execution=msg.parent.removeprefix("executions/"),
        created_at=_time(msg.create_time, msg.HasField("create_time")),
        updated_at=_time(msg.update_time, msg.HasField("update_time")),
        ended_at=_time(msg.end_time, msg.HasField("end_time")),
        last_sequence=msg.last_sequence,
        invoked_execution=msg.invoked_execution.removeprefix("executions/"),
        labels=dict(msg.labels),
        message=msg,
    )


def to_transition(msg: sm_pb.InstanceTransition) -> Transition:
    return Transition(
        instance_id=msg.instance.removeprefix("instances/"),
        sequence=msg.sequence,
        kind=from_proto(TransitionKind, _Transition.Kind, msg.kind),
        time=_time(msg.time, msg.HasField("time")),
        event=msg.event,
        event_id=msg.event_id,
        event_data=c.from_value(msg.event_data) if msg.HasField("event_data") else None,
        from_state=msg.from_state,
        to_state=msg.to_state,
        transition_index=msg.transition_index if msg.HasField("transition_index") else None,
        actions=[
            ActionResult(
                a.phase,
                a.state,
                a.index,
                a.path,
                a.kind,
                a.target,
                a.succeeded,
                a.attempts,
                c.from_value(a.output) if a.HasField("output") else None,
                _error(a.error, a.HasField("error")),
                a.duration_seconds,
            )
            for a in msg.actions
        ],
        assigned=c.from_value(struct_pb2.Value(struct_value=msg.assigned))
        if msg.HasField("assigned")
        else None,
        instance_state=_state(msg.instance_state),
        error=_error(msg.error, msg.HasField("error")),
        reentered=msg.reentered,
        message=msg,
    )


def _raise(exc: grpc.RpcError) -> AgentrunError:
    error = from_rpc_error(exc)
    if isinstance(error, IllegalTransition) and "accepted_events" in error.metadata:
        return EventNotAccepted(
            error.message,
            reason=error.reason,
            code=error.code,
            metadata=error.metadata,
            violations=error.violations,
            retry_after=error.retry_after,
        )
    return error


def _create_request(
    workflow: str,
    input: Any,
    version: int | None,
    request_id: str | None,
    data: Mapping[str, Any] | None,
) -> pb.CreateInstanceRequest:
    request = pb.CreateInstanceRequest(
        workflow=c.workflow_name(workflow), version=version or 0, request_id=request_id or ""
    )
    request.input.CopyFrom(c.to_value({} if input is None else input))
    if data is not None:
        request.data.CopyFrom(c.to_value(dict(data)).struct_value)
    return request


def _event_request(
    instance: str | Instance, event: str, data: Any, event_id: str | None
) -> pb.SendEventRequest:
    request = pb.SendEventRequest(
        name=instance_name(instance), event=event, event_id=event_id or ""
    )
    if data is not None:
        request.data.CopyFrom(c.to_value(data))
    return request


def _filter(
    workflow: str | None, states: Iterable[InstanceState | str], current_state: str | None
) -> str:
    parts = []
    if workflow:
        parts.append(f'workflow = "{workflow.removeprefix("workflows/")}"')
    names = [str(s).upper() for s in states]
    if names:
        parts.append(f"state IN ({', '.join(names)})")
    if current_state:
        parts.append(f'current_state = "{current_state}"')
    return " AND ".join(parts)


def _parts(client: Any) -> tuple[Any, tuple[tuple[str, str], ...], float | None, int]:
    channel = getattr(client, "channel", client)
    return (
        channel,
        getattr(client, "metadata", ()),
        getattr(client, "timeout", 30.0),
        getattr(client, "watch_reconnects", 20),
    )


class AsyncMachinesClient:
    """State machines over an `AsyncClient` (or a grpc.aio channel)."""

    def __init__(self, client: Any, *, metadata: Iterable[tuple[str, str]] | None = None) -> None:
        channel, meta, self.timeout, self.watch_reconnects = _parts(client)
        self.metadata = tuple(metadata) if metadata is not None else meta
        self.state_machine_service = pb_grpc.StateMachineServiceStub(channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _raise(exc) from None

    async def create_instance(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: int | None = None,
        request_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Instance:
        request = _create_request(workflow, input, version, request_id, data)
        return to_instance(
            (await self._call(self.state_machine_service.CreateInstance, request)).instance
        )

    async def get_instance(self, instance: str | Instance) -> Instance:
        request = pb.GetInstanceRequest(name=instance_name(instance))
        return to_instance(
            (await self._call(self.state_machine_service.GetInstance, request)).instance
        )

    async def list_instances(
        self,
        *,
        workflow: str | None = None,
        states: Iterable[InstanceState | str] = (),
        current_state: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Instance]:
        text = _filter(workflow, states, current_state)
        token = ""
        while True:
            request = pb.ListInstancesRequest(page_size=page_size, page_token=token, filter=text)
            response = await self._call(self.state_machine_service.ListInstances, request)
            for item in response.instances:
                yield to_instance(item)
            token = response.next_page_token
            if not token:
                return

    async def send_event(
        self, instance: str | Instance, event: str, data: Any = None, *, event_id: str | None = None
    ) -> tuple[Instance, Transition]:
        """The instance after the event, and the history entry recording it."""
        response = await self._call(
            self.state_machine_service.SendEvent, _event_request(instance, event, data, event_id)
        )
        return to_instance(response.instance), to_transition(response.transition)

    async def cancel_instance(self, instance: str | Instance, *, reason: str = "") -> Instance:
        request = pb.CancelInstanceRequest(name=instance_name(instance), reason=reason)
        return to_instance(
            (await self._call(self.state_machine_service.CancelInstance, request)).instance
        )

    async def available_events(self, instance: str | Instance) -> list[str]:
        request = pb.GetAvailableEventsRequest(name=instance_name(instance))
        return list(
            (await self._call(self.state_machine_service.GetAvailableEvents, request)).events
        )

    async def history(
        self, instance: str | Instance, *, after_sequence: int = 0, page_size: int = 1000
    ) -> AsyncIterator[Transition]:
        token = ""
        while True:
            request = pb.ListInstanceHistoryRequest(
                parent=instance_name(instance),
                after_sequence=after_sequence,
                page_size=page_size,
                page_token=token,
            )
            response = await self._call(self.state_machine_service.ListInstanceHistory, request)
            for item in response.transitions:
                yield to_transition(item)
            token = response.next_page_token
            if not token:
                return

    async def watch(
        self, instance: str | Instance, *, after_sequence: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Transition]:
        """History entries after `after_sequence`, live, until the instance ends; reconnects
        after the last entry seen when the stream breaks (UNAVAILABLE)."""
        name = instance_name(instance)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_sequence
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self.state_machine_service.WatchInstance(
                pb.WatchInstanceRequest(name=name, after_sequence=last),
                metadata=self.metadata,
                timeout=remaining,
            )
            try:
                async for response in call:
                    if response.transition.sequence <= last:
                        continue
                    entry = to_transition(response.transition)
                    last = entry.sequence
                    failures = 0
                    yield entry
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != _UNAVAILABLE or failures >= self.watch_reconnects:
                    raise _raise(exc) from None
                failures += 1
                await asyncio.sleep(min(2.0, 0.025 * 2 ** (failures - 1)))
            finally:
                call.cancel()

    async def wait(self, instance: str | Instance, *, timeout: float | None = None) -> Instance:
        """Watches until the instance ends, then returns it."""
        async for _ in self.watch(instance, timeout=timeout):
            pass
        return await self.get_instance(instance)


class MachinesClient:
    """State machines over a blocking `Client` (or a grpc channel)."""

    def __init__(self, client: Any, *, metadata: Iterable[tuple[str, str]] | None = None) -> None:
        channel, meta, self.timeout, self.watch_reconnects = _parts(client)
        self.metadata = tuple(metadata) if metadata is not None else meta
        self.state_machine_service = pb_grpc.StateMachineServiceStub(channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _raise(exc) from None

    def create_instance(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: int | None = None,
        request_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Instance:
        request = _create_request(workflow, input, version, request_id, data)
        return to_instance(self._call(self.state_machine_service.CreateInstance, request).instance)

    def get_instance(self, instance: str | Instance) -> Instance:
        return to_instance(
            self._call(
                self.state_machine_service.GetInstance,
                pb.GetInstanceRequest(name=instance_name(instance)),
            ).instance
        )

    def list_instances(
        self,
        *,
        workflow: str | None = None,
        states: Iterable[InstanceState | str] = (),
        current_state: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Instance]:
        text = _filter(workflow, states, current_state)
        token = ""
        while True:
            request = pb.ListInstancesRequest(page_size=page_size, page_token=token, filter=text)
            response = self._call(self.state_machine_service.ListInstances, request)
            for item in response.instances:
                yield to_instance(item)
            token = response.next_page_token
            if not token:
                return

    def send_event(
        self, instance: str | Instance, event: str, data: Any = None, *, event_id: str | None = None
    ) -> tuple[Instance, Transition]:
        response = self._call(
            self.state_machine_service.SendEvent, _event_request(instance, event, data, event_id)
        )
        return to_instance(response.instance), to_transition(response.transition)

    def cancel_instance(self, instance: str | Instance, *, reason: str = "") -> Instance:
        request = pb.CancelInstanceRequest(name=instance_name(instance), reason=reason)
        return to_instance(self._call(self.state_machine_service.CancelInstance, request).instance)

    def available_events(self, instance: str | Instance) -> list[str]:
        request = pb.GetAvailableEventsRequest(name=instance_name(instance))
        return list(self._call(self.state_machine_service.GetAvailableEvents, request).events)

    def history(
        self, instance: str | Instance, *, after_sequence: int = 0, page_size: int = 1000
    ) -> Iterator[Transition]:
        token = ""
        while True:
            request = pb.ListInstanceHistoryRequest(
                parent=instance_name(instance),
                after_sequence=after_sequence,
                page_size=page_size,
                page_token=token,
            )
            response = self._call(self.state_machine_service.ListInstanceHistory, request)
            for item in response.transitions:
                yield to_transition(item)
            token = response.next_page_token
            if not token:
                return

    def watch(
        self, instance: str | Instance, *, after_sequence: int = 0, timeout: float | None = None
    ) -> Iterator[Transition]:
        name = instance_name(instance)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_sequence
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self.state_machine_service.WatchInstance(
                pb.WatchInstanceRequest(name=name, after_sequence=last),
                metadata=self.metadata,
                timeout=remaining,
            )
            try:
                for response in call:
                    if response.transition.sequence <= last:
                        continue
                    entry = to_transition(response.transition)
                    last = entry.sequence
                    failures = 0
                    yield entry
                return
            except grpc.RpcError as exc:
                if exc.code() != _UNAVAILABLE or failures >= self.watch_reconnects:
                    raise _raise(exc) from None
                failures += 1
                time.sleep(min(2.0, 0.025 * 2 ** (failures - 1)))
            finally:
                call.cancel()

    def wait(self, instance: str | Instance, *, timeout: float | None = None) -> Instance:
        for _ in self.watch(instance, timeout=timeout):
            pass
        return self.get_instance(instance)
