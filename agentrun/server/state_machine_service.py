"""StateMachineService: thin adapters from requests to the MachineEngine and back.

Registered on an AgentrunServer with `add_to_server(server, machines)` (before `start()`).
Errors map in the one shared place (`agentrun.server.errors`): INSTANCE_NOT_FOUND is
NOT_FOUND; an event the state does not accept is FAILED_PRECONDITION (ILLEGAL_TRANSITION) whose
details list the accepted events.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import grpc

from agentrun.server import convert, requests
from agentrun.server.auth import current_tenant
from agentrun.server.errors import ApiError, invalid_argument
from agentrun.server.interceptors import Lifecycle
from agentrun.server.streams import until_stopped
from agentrun.storage.machines import HistoryRecord, InstanceRecord, InstanceState
from agentrun.v1 import state_machine_pb2 as sm_pb
from agentrun.v1 import state_machine_service_pb2 as pb
from agentrun.v1 import state_machine_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine
    from agentrun.server.app import AgentrunServer

__all__ = [
    "SERVICE_NAME",
    "StateMachineService",
    "add_to_server",
    "instance_to_proto",
    "transition_to_proto",
]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StateMachineService"].full_name
INSTANCES = "instances/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def add_to_server(
    server: AgentrunServer, machines: MachineEngine, lifecycle: Lifecycle | None = None
) -> None:
    """Registers the service on `server` (call before `server.start()`); a no-op when the
    server registered it already (it does when its engine has a MachineEngine)."""
    if SERVICE_NAME in server.service_names:
        return
    pb_grpc.add_StateMachineServiceServicer_to_server(
        StateMachineService(machines, lifecycle or server.lifecycle), server.registry
    )


# Names and filters -------------------------------------------------------------
def instance_id(value: str, field: str = "name") -> str:
    ident = value.removeprefix(INSTANCES)
    if not ident:
        raise invalid_argument(field, "required: `instances/{id}`")
    if not _NAME.fullmatch(ident):
        raise invalid_argument(field, f"not an instance name: {value[:80]!r}")
    return ident


def instance_filter(text: str) -> tuple[str | None, tuple[InstanceState, ...], str | None]:
    """`workflow = "order" AND state = ACTIVE AND current_state = "paid"`, `state IN (A, B)`."""
    workflow: str | None = None
    current: str | None = None
    states: list[InstanceState] = []
    if not text.strip():
        return None, (), None
    for field, values in requests.filter_clauses(text, ("workflow", "state", "current_state")):
        if field in ("workflow", "current_state") and len(values) != 1:
            raise invalid_argument("filter", f"{field} takes one value")
        if field == "workflow":
            workflow = requests.workflow_name(values[0], "filter")
        elif field == "current_state":
            current = values[0]
        else:
            for value in values:
                name = value.upper().removeprefix("STATE_")
                try:
                    states.append(InstanceState(name))
                except ValueError:
                    raise invalid_argument(
                        "filter", f"unknown instance state {value[:60]!r}"
                    ) from None
    return workflow, tuple(states), current


# Converters --------------------------------------------------------------------
# protoc types enum fields by their enum class, types-protobuf's Value() returns int (the same
# ints at run time): the casts say which enum each number belongs to.
_STATES = {
    s: cast(
        sm_pb.StateMachineInstance.State, sm_pb.StateMachineInstance.State.Value(f"STATE_{s.value}")
    )
    for s in InstanceState
}
_KINDS = {
    name: cast(sm_pb.InstanceTransition.Kind, sm_pb.InstanceTransition.Kind.Value(f"KIND_{name}"))
    for name in ("CREATED", "TRANSITION", "NO_TRANSITION", "REJECTED", "ABORTED", "CANCELLED")
}


def _set_error(target: sm_pb.StateMachineError, error: dict[str, Any] | None) -> None:
    if not error:
        return
    target.type = str(error.get("type") or "")
    target.message = str(error.get("message") or "")
    target.state = str(error.get("state") or "")
    details = {k: v for k, v in error.items() if k not in ("type", "message", "state", "details")}
    details.update(error.get("details") or {})
    convert.set_struct(target.details, details or None)


def instance_to_proto(record: InstanceRecord) -> sm_pb.StateMachineInstance:
    msg = sm_pb.StateMachineInstance(
        name=INSTANCES + record.id,
        workflow=convert.workflow_name(record.workflow),
        workflow_version=record.version,
        state=_STATES[record.state],
        current_state=record.current,
        request_id=record.request_id or "",
        parent=convert.execution_name(record.parent_id) if record.parent_id else "",
        parent_node_id=record.parent_node or "",
        last_sequence=record.last_sequence,
        invoked_execution=convert.execution_name(record.invoke_execution)
        if record.invoke_execution
        else "",
        labels=record.labels,
    )
    convert.set_struct(msg.data, record.data or {})
    convert.set_value(msg.input, record.input)
    _set_error(msg.error, record.error)
    convert.set_time(msg.create_time, record.created_at)
    convert.set_time(msg.update_time, record.updated_at)
    convert.set_time(msg.end_time, record.ended_at)
    return msg


def transition_to_proto(entry: HistoryRecord) -> sm_pb.InstanceTransition:
    msg = sm_pb.InstanceTransition(
        instance=INSTANCES + entry.instance_id,
        sequence=entry.sequence,
        kind=_KINDS[entry.kind.value],
        event=entry.event,
        event_id=entry.event_id or "",
        from_state=entry.from_state,
        to_state=entry.to_state,
        instance_state=_STATES[entry.instance_state],
        reentered=entry.reentered,
    )
    convert.set_time(msg.time, entry.time)
    if entry.event_data is not None:
        convert.set_value(msg.event_data, entry.event_data)
    if entry.transition_index is not None:
        msg.transition_index = entry.transition_index
    for action in entry.actions or ():
        result = msg.actions.add(
            phase=str(action.get("phase", "")),
            state=str(action.get("state", "")),
            index=int(action.get("index", 0)),
            path=str(action.get("path", "")),
            kind=str(action.get("kind", "")),
            target=str(action.get("target", "")),
            succeeded=bool(action.get("ok")),
            attempts=int(action.get("attempts", 0)),
            duration_seconds=float(action.get("duration", 0.0)),
        )
        if action.get("ok"):
            convert.set_value(result.output, action.get("output"))
        else:
            _set_error(result.error, action.get("error"))
    if entry.assigned is not None:
        convert.set_struct(msg.assigned, entry.assigned)
    _set_error(msg.error, entry.error)
    return msg


class StateMachineService(pb_grpc.StateMachineServiceServicer):
    def __init__(self, machines: MachineEngine, lifecycle: Lifecycle | None = None) -> None:
        self._machines = machines
        self._lifecycle = lifecycle or Lifecycle()

    async def CreateInstance(
        self,
        request: pb.CreateInstanceRequest,
        context: grpc.aio.ServicerContext[pb.CreateInstanceRequest, pb.CreateInstanceResponse],
    ) -> pb.CreateInstanceResponse:
        name = requests.workflow_name(request.workflow, "workflow")
        if request.version < 0:
            raise invalid_argument("version", "must not be negative")
        record = await self._machines.create_instance(
            name,
            convert.from_value(request.input) if request.HasField("input") else {},
            tenant=current_tenant(),
            version=request.version or None,
            request_id=request.request_id or None,
            data=convert.from_struct(request.data) if request.HasField("data") else None,
        )
        return pb.CreateInstanceResponse(instance=instance_to_proto(record))

    async def GetInstance(
        self,
        request: pb.GetInstanceRequest,
        context: grpc.aio.ServicerContext[pb.GetInstanceRequest, pb.GetInstanceResponse],
    ) -> pb.GetInstanceResponse:
        record = await self._machines.get_instance(
            instance_id(request.name), tenant=current_tenant()
        )
        return pb.GetInstanceResponse(instance=instance_to_proto(record))

    async def ListInstances(
        self,
        request: pb.ListInstancesRequest,
        context: grpc.aio.ServicerContext[pb.ListInstancesRequest, pb.ListInstancesResponse],
    ) -> pb.ListInstancesResponse:
        workflow, states, current = instance_filter(request.filter)
        size = requests.page_size(request.page_size)
        after = requests.decode_token(request.page_token, "instances", request.filter)
        records = await self._machines.list_instances(
            tenant=current_tenant(),
            limit=size + 1,
            after_id=after,
            workflow=workflow,
            states=states,
            current=current,
        )
        response = pb.ListInstancesResponse(
            instances=[instance_to_proto(r) for r in records[:size]]
        )
        if len(records) > size:
            response.next_page_token = requests.encode_token(
                "instances", records[size - 1].id, request.filter
            )
        return response

    async def SendEvent(
        self,
        request: pb.SendEventRequest,
        context: grpc.aio.ServicerContext[pb.SendEventRequest, pb.SendEventResponse],
    ) -> pb.SendEventResponse:
        ident = instance_id(request.name)
        if not request.event:
            raise invalid_argument("event", "required")
        if ":" in request.event:
            raise invalid_argument("event", "':' is reserved for the engine's own events")
        record, entry = await self._machines.send_event(
            ident,
            request.event,
            convert.from_value(request.data) if request.HasField("data") else None,
            tenant=current_tenant(),
            event_id=request.event_id or None,
        )
        return pb.SendEventResponse(
            instance=instance_to_proto(record), transition=transition_to_proto(entry)
        )

    async def ListInstanceHistory(
        self,
        request: pb.ListInstanceHistoryRequest,
        context: grpc.aio.ServicerContext[
            pb.ListInstanceHistoryRequest, pb.ListInstanceHistoryResponse
        ],
    ) -> pb.ListInstanceHistoryResponse:
        ident = instance_id(request.parent, "parent")
        first = requests.sequence(request.after_sequence)
        size = requests.page_size(request.page_size)
        after = requests.decode_token(request.page_token, "history", ident)
        if after is None:
            after = first
        entries = await self._machines.list_history(
            ident, tenant=current_tenant(), after_sequence=after, limit=size + 1
        )
        response = pb.ListInstanceHistoryResponse(
            transitions=[transition_to_proto(e) for e in entries[:size]]
        )
        if len(entries) > size:
            response.next_page_token = requests.encode_token(
                "history", entries[size - 1].sequence, ident
            )
        return response

    async def GetAvailableEvents(
        self,
        request: pb.GetAvailableEventsRequest,
        context: grpc.aio.ServicerContext[
            pb.GetAvailableEventsRequest, pb.GetAvailableEventsResponse
        ],
    ) -> pb.GetAvailableEventsResponse:
        record, events = await self._machines.available_events(
            instance_id(request.name), tenant=current_tenant()
        )
        return pb.GetAvailableEventsResponse(
            current_state=record.current, events=events, state=_STATES[record.state]
        )

    async def CancelInstance(
        self,
        request: pb.CancelInstanceRequest,
        context: grpc.aio.ServicerContext[pb.CancelInstanceRequest, pb.CancelInstanceResponse],
    ) -> pb.CancelInstanceResponse:
        record = await self._machines.cancel_instance(
            instance_id(request.name),
            tenant=current_tenant(),
            reason=request.reason or "cancelled by request",
        )
        return pb.CancelInstanceResponse(instance=instance_to_proto(record))

    async def WatchInstance(
        self,
        request: pb.WatchInstanceRequest,
        context: grpc.aio.ServicerContext[pb.WatchInstanceRequest, pb.WatchInstanceResponse],
    ) -> AsyncIterator[pb.WatchInstanceResponse]:
        ident = instance_id(request.name)
        last = requests.sequence(request.after_sequence)
        entries = self._machines.watch(ident, tenant=current_tenant(), after_sequence=last)
        async for entry in until_stopped(entries, self._lifecycle.draining):
            last = entry.sequence
            yield pb.WatchInstanceResponse(transition=transition_to_proto(entry))
        if self._lifecycle.is_draining:
            raise ApiError(
                "SHUTTING_DOWN",
                "the server is shutting down; resume with after_sequence",
                last_sequence=last,
            )
