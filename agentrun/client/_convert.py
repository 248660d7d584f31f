"""Requests from SDK arguments and SDK objects from responses, shared by both clients."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from agentrun import spec_words
from agentrun.client._enums import from_proto
from agentrun.client.types import (
    ControlOutcome,
    Diagnostic,
    Execution,
    ExecutionError,
    ExecutionEvent,
    ExecutionState,
    NodeExecution,
    NodeState,
    ValidationResult,
    Wait,
    Workflow,
)
from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import execution_service_pb2 as es_pb
from agentrun.v1 import workflow_pb2 as wf_pb
from agentrun.v1 import workflow_service_pb2 as ws_pb

_MAX_EXACT = 2**53


# Names -------------------------------------------------------------------------
def workflow_name(name: str) -> str:
    return name if name.startswith("workflows/") else "workflows/" + name


def execution_name(execution: str | Execution) -> str:
    if isinstance(execution, Execution):
        return execution.name
    return execution if execution.startswith("executions/") else "executions/" + execution


def _strip(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


# Values ------------------------------------------------------------------------
def to_value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(obj, value)
    return value


def _number(f: float) -> int | float:
    return int(f) if f.is_integer() and abs(f) <= _MAX_EXACT else f


def from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return None


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: from_value(v) for k, v in struct.fields.items()}


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    # Cut to the microsecond, never rounded up: a time read here and sent back as a bound
    # (list_executions(created_after=e.create_time)) is then at or before the one stored.
    return datetime.fromtimestamp(ts.seconds, tz=UTC) + timedelta(microseconds=ts.nanos // 1000)


# Workflows ---------------------------------------------------------------------
def definition(
    spec: wf_pb.WorkflowSpec | Mapping[str, Any] | None, source: str | None
) -> dict[str, Any]:
    """The `definition` oneof: a WorkflowSpec message as is; a dict or text as source (the
    server's loader takes the workflow format's short enum names and human durations)."""
    if (spec is None) == (source is None):
        raise TypeError("pass exactly one of spec= or source=")
    if isinstance(spec, wf_pb.WorkflowSpec):
        return {"spec": spec}
    if spec is not None:
        return {"source": json.dumps(dict(spec))}
    return {"source": source}


def workflow(message: ws_pb.Workflow) -> Workflow:
    return Workflow(
        name=_strip(message.name, "workflows/"),
        version=message.version,
        description=message.description,
        spec=_ints(spec_words.to_dict(message.spec)),
        create_time=_time(message.create_time, message.HasField("create_time")),
        problems=[Diagnostic(d.field, d.description) for d in message.problems],
        message=message,
    )


def _ints(obj: Any) -> Any:
    if isinstance(obj, float):
        return _number(obj)
    if isinstance(obj, dict):
        return {k: _ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ints(v) for v in obj]
    return obj


def validation(message: ws_pb.ValidateWorkflowResponse) -> ValidationResult:
    return ValidationResult(
        valid=message.valid,
        errors=[Diagnostic(d.field, d.description) for d in message.errors],
        warnings=[Diagnostic(d.field, d.description) for d in message.warnings],
        stages=[list(s.node_ids) for s in message.stages],
    )


# Executions --------------------------------------------------------------------
def start_request(
    workflow: str,
    input: Any,
    *,
    version: int | None,
    request_id: str | None,
    priority: int,
    wait: bool = False,
    wait_timeout: float | None = None,
) -> es_pb.StartExecutionRequest:
    request = es_pb.StartExecutionRequest(
        workflow=workflow_name(workflow),
        version=version or 0,
        # A retried start (the channel retries UNAVAILABLE) must apply once.
        request_id=request_id or uuid.uuid4().hex,
        priority=priority,
        wait=wait,
    )
    if wait_timeout is not None:
        request.wait_timeout.FromNanoseconds(round(wait_timeout * 1e9))
    if input is not None:
        request.input.CopyFrom(to_value(input))
    return request


# The server's wait when `wait_timeout` is unset (agentrun/server/requests.py).
DEFAULT_WAIT_SECONDS = 30.0


def start_call_timeout(
    timeout: float | None, wait: bool, wait_timeout: float | None
) -> float | None:
    """A StartExecution's deadline: the client's, plus the wait it asks the server for (the
    server answers before the call's deadline, so a short one would cut the wait)."""
    if timeout is None or not wait:
        return timeout
    return timeout + (DEFAULT_WAIT_SECONDS if wait_timeout is None else max(0.0, wait_timeout))


def signal_request(
    execution: str, signal: str, data: Any, signal_id: str | None
) -> es_pb.SignalExecutionRequest:
    request = es_pb.SignalExecutionRequest(
        name=execution_name(execution), signal=signal, signal_id=signal_id or uuid.uuid4().hex
    )
    if data is not None:
        request.data.CopyFrom(to_value(data))
    return request


def execution_filter(
    workflow: str | None, states: Iterable[ExecutionState | str], filter: str | None
) -> str:
    clauses = [filter] if filter else []
    if workflow:
        clauses.append(f'workflow = "{_strip(workflow, "workflows/")}"')
    names = [ExecutionState(s).value for s in states]
    if names:
        clauses.append(f"state IN ({', '.join(names)})")
    return " AND ".join(clauses)


def list_executions_request(
    filter: str,
    *,
    created_after: datetime | None,
    created_before: datetime | None,
    newest_first: bool,
) -> es_pb.ListExecutionsRequest:
    """The request without its page fields: the same for every page (tokens are bound to it).
    A naive datetime is taken as UTC."""
    request = es_pb.ListExecutionsRequest(
        filter=filter,
        order=es_pb.EXECUTION_ORDER_NEWEST_FIRST
        if newest_first
        else es_pb.EXECUTION_ORDER_UNSPECIFIED,
    )
    for field, value in (("created_after", created_after), ("created_before", created_before)):
        if value is not None:
            getattr(request, field).FromDatetime(
                value if value.tzinfo else value.replace(tzinfo=UTC)
            )
    return request


def _error(message: ex_pb.ExecutionError, present: bool) -> ExecutionError | None:
    if not present:
        return None
    return ExecutionError(
        type=message.type,
        message=message.message,
        node_id=message.node_id,
        details=from_struct(message.details),
    )


def execution(message: ex_pb.Execution, nodes: Iterable[ex_pb.NodeExecution] = ()) -> Execution:
    has = message.HasField
    return Execution(
        id=_strip(message.name, "executions/"),
        workflow=_strip(message.workflow, "workflows/"),
        workflow_version=message.workflow_version,
        state=from_proto(ExecutionState, ex_pb.Execution.State, message.state),
        input=from_value(message.input) if has("input") else None,
        output=from_value(message.output) if has("output") else None,
        error=_error(message.error, has("error")),
        vars=from_struct(message.vars),
        priority=message.priority,
        request_id=message.request_id,
        parent_id=_strip(message.parent, "executions/"),
        parent_node_id=message.parent_node_id,
        create_time=_time(message.create_time, has("create_time")),
        start_time=_time(message.start_time, has("start_time")),
        end_time=_time(message.end_time, has("end_time")),
        expire_time=_time(message.expire_time, has("expire_time")),
        last_sequence=message.last_sequence,
        labels=dict(message.labels),
        nodes=[node(n) for n in nodes],
        message=message,
    )


def node(message: ex_pb.NodeExecution) -> NodeExecution:
    has = message.HasField
    return NodeExecution(
        node_id=message.node_id,
        state=from_proto(NodeState, ex_pb.NodeExecution.State, message.state),
        attempt=message.attempt,
        input=from_value(message.input) if has("input") else None,
        output=from_value(message.output) if has("output") else None,
        error=_error(message.error, has("error")),
        skip_reason=message.skip_reason,
        start_time=_time(message.start_time, has("start_time")),
        end_time=_time(message.end_time, has("end_time")),
        message=message,
    )


def event(message: ex_pb.ExecutionEvent) -> ExecutionEvent:
    return ExecutionEvent(
        execution_id=_strip(message.execution, "executions/"),
        sequence=message.sequence,
        type=message.type,
        time=_time(message.time, message.HasField("time")),
        node_id=message.node_id,
        data=from_struct(message.data),
        message=message,
    )


# Bulk control actions by name (control_executions).
CONTROL_ACTIONS = {
    "pause": es_pb.ControlExecutionsRequest.ACTION_PAUSE,
    "resume": es_pb.ControlExecutionsRequest.ACTION_RESUME,
    "cancel": es_pb.ControlExecutionsRequest.ACTION_CANCEL,
}


def control_request(
    action: str, text: str, page_size: int, token: str, compensate: bool
) -> es_pb.ControlExecutionsRequest:
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(CONTROL_ACTIONS)}, not {action!r}")
    return es_pb.ControlExecutionsRequest(
        action=CONTROL_ACTIONS[action],
        filter=text,
        page_size=page_size,
        page_token=token,
        compensate=compensate,
    )


def resume_request(execution: str, node_id: str | None, args: Any) -> es_pb.ResumeExecutionRequest:
    request = es_pb.ResumeExecutionRequest(name=execution_name(execution), node_id=node_id or "")
    if args is not NO_ARGS:
        request.args.CopyFrom(to_value(args))
    return request


# Marks "no args given" to resume_execution (None is an argument like any other).
NO_ARGS: Any = object()


def control_outcome(message: es_pb.ControlOutcome) -> ControlOutcome:
    return ControlOutcome(
        execution_id=_strip(message.execution, "executions/"),
        done=message.done,
        state=from_proto(ExecutionState, ex_pb.Execution.State, message.state),
        reason=message.reason,
        message=message.message,
    )


def wait(message: ex_pb.Wait) -> Wait:
    has = message.HasField
    return Wait(
        wait_id=message.wait_id,
        execution_id=_strip(message.execution, "executions/"),
        workflow=message.workflow,
        node_id=message.node_id,
        map_index=message.map_index if has("map_index") else None,
        attempt=message.attempt,
        signal=message.signal,
        start_time=_time(message.start_time, has("start_time")),
        timeout_time=_time(message.timeout_time, has("timeout_time")),
        schema=from_struct(message.schema) if has("schema") else None,
        message=message,
    )


def answer_request(
    wait_id: str | Wait | None, token: str | None, data: Any
) -> es_pb.AnswerWaitRequest:
    if (wait_id is None) == (token is None):
        raise TypeError("pass exactly one of wait_id or token")
    request = es_pb.AnswerWaitRequest()
    if token is not None:
        request.token = token
    else:
        request.wait_id = wait_id.wait_id if isinstance(wait_id, Wait) else str(wait_id)
    if data is not None:
        request.data.CopyFrom(to_value(data))
    return request
