"""Converters between the store's records and the protobuf messages of agentrun.v1.

Numbers in `google.protobuf.Value`/`Struct` are doubles on the wire; the workflow format says
a number with no fractional part is an int, so integral floats become ints at this boundary.
"""

from __future__ import annotations

import json
import math
from typing import Any, cast

from google.protobuf import struct_pb2, timestamp_pb2

from agentrun.engine.errors import InvalidWorkflow
from agentrun.engine.loader import spec_from_stored
from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    WorkflowRecord,
)
from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import workflow_pb2 as wf_pb
from agentrun.v1 import workflow_service_pb2 as wfs_pb

WORKFLOWS = "workflows/"
EXECUTIONS = "executions/"
_MAX_EXACT = 2**53


# JSON values -----------------------------------------------------------------
def set_value(target: struct_pb2.Value, obj: Any) -> None:
    """Writes a JSON value into a `Value` message in place."""
    if obj is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif obj is True or obj is False:
        target.bool_value = obj
    elif isinstance(obj, (int, float)):
        target.number_value = obj
    elif isinstance(obj, str):
        target.string_value = obj
    elif isinstance(obj, dict):
        struct = target.struct_value
        struct.SetInParent()
        fields = struct.fields
        for key, item in obj.items():
            set_value(fields[str(key)], item)
    elif isinstance(obj, (list, tuple)):
        values = target.list_value
        values.SetInParent()
        for item in obj:
            set_value(values.values.add(), item)
    else:  # datetimes, decimals, ...: their JSON text
        target.string_value = str(obj)


def to_value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    set_value(value, obj)
    return value


def set_struct(target: struct_pb2.Struct, obj: dict[str, Any] | None) -> None:
    if obj is None:
        return
    target.SetInParent()
    fields = target.fields
    for key, item in obj.items():
        set_value(fields[str(key)], item)


def _number(f: float) -> int | float:
    if f.is_integer() and abs(f) <= _MAX_EXACT:
        return int(f)
    return f


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
    return {key: from_value(v) for key, v in struct.fields.items()}


# Times -------------------------------------------------------------------------
def set_time(target: timestamp_pb2.Timestamp, seconds: float | None) -> None:
    """Exact to the nanosecond: `seconds * 1e9` as one float is off by up to ~128 ns today,
    enough that a time sent back (ListExecutions' `created_after` = an execution's
    `create_time`) would not read as the stored float; whole seconds and the fraction apart
    read back as it (requests.time_bound)."""
    if seconds is not None:
        whole = math.floor(seconds)
        nanos = round((seconds - whole) * 1e9)
        if nanos >= 1_000_000_000:
            whole, nanos = whole + 1, nanos - 1_000_000_000
        target.seconds, target.nanos = whole, nanos


# Names -------------------------------------------------------------------------
def workflow_name(name: str) -> str:
    return WORKFLOWS + name


def execution_name(execution_id: str) -> str:
    return EXECUTIONS + execution_id


# Workflows ---------------------------------------------------------------------
def set_workflow(
    target: wfs_pb.Workflow,
    record: WorkflowRecord,
    *,
    with_spec: bool = True,
    spec: wf_pb.WorkflowSpec | None = None,
) -> None:
    """Fills `target` (a response's own field: setting one through a constructor copies the
    whole spec again) with the workflow as GetWorkflow shows it.

    `spec`: the message this version was just stored from (`Workflows.create` stores
    `spec_to_dict(spec)`), copied instead of rebuilt from the stored form: the rebuild parses
    every node again (~50 ms for 10,000 nodes, on the caller's thread) and gives the same
    message but for fields this version does not know, which the stored form drops and so are
    dropped here too (tests/server/test_workflow_answers.py)."""
    target.name = WORKFLOWS + record.name
    target.version = record.version
    target.description = record.description or str(record.spec.get("description", "") or "")
    if spec is not None:
        target.spec.CopyFrom(spec)
        target.spec.DiscardUnknownFields()
    elif with_spec:
        target.spec.CopyFrom(spec_from_stored(record.spec))
    set_time(target.create_time, record.created_at)


def set_listed_workflow(target: wfs_pb.Workflow, record: WorkflowRecord) -> None:
    """A workflow as a list shows it: one whose stored spec this version cannot read is
    listed with its problems instead of its spec, so the others stay listable."""
    try:
        set_workflow(target, record)
    except InvalidWorkflow as exc:
        target.Clear()
        set_workflow(target, record, with_spec=False)
        target.problems.extend(diagnostic_to_proto(d) for d in exc.diagnostics)


def diagnostic_to_proto(diagnostic: Any) -> wfs_pb.Diagnostic:
    return wfs_pb.Diagnostic(field=diagnostic.path, description=diagnostic.message)


# Executions --------------------------------------------------------------------
# protoc's .pyi types an enum's values as its State class, types-protobuf's `Value()` as plain
# int (the same ints at run time): the casts say which enum each number belongs to.
_EXECUTION_STATE = {
    s: cast(ex_pb.Execution.State, ex_pb.Execution.State.Value("STATE_" + s.value))
    for s in ExecutionState
}
_EXECUTION_STATE_BACK: dict[int, ExecutionState] = {v: k for k, v in _EXECUTION_STATE.items()}
_NODE_STATE = {
    s: cast(ex_pb.NodeExecution.State, ex_pb.NodeExecution.State.Value("STATE_" + s.value))
    for s in NodeState
}


def execution_state_to_proto(state: ExecutionState | str) -> ex_pb.Execution.State:
    # A member and its string value hash alike: most calls find it without ExecutionState().
    found = _EXECUTION_STATE.get(state)  # type: ignore[arg-type]
    if found is not None:
        return found
    return _EXECUTION_STATE.get(ExecutionState(state), ex_pb.Execution.STATE_UNSPECIFIED)


def execution_state_from_proto(value: int) -> ExecutionState:
    return _EXECUTION_STATE_BACK[value]


def node_state_to_proto(state: NodeState | str) -> ex_pb.NodeExecution.State:
    try:
        return _NODE_STATE[NodeState(state)]
    except ValueError:
        return ex_pb.NodeExecution.STATE_UNSPECIFIED


def set_error(target: ex_pb.ExecutionError, error: dict[str, Any] | None) -> None:
    if not error:
        return
    target.type = str(error.get("type") or "")
    target.message = str(error.get("message") or "")
    node = error.get("node")
    if node:
        target.node_id = str(node)
    details = error.get("details")
    if isinstance(details, dict):
        set_struct(target.details, details)
    elif details is not None:
        set_struct(target.details, {"value": details})


def execution_to_proto(record: ExecutionRecord) -> ex_pb.Execution:
    message = ex_pb.Execution()
    set_execution(message, record)
    return message


def set_execution(message: ex_pb.Execution, record: ExecutionRecord) -> None:
    """Writes `record` into `message` in place (a response's own field: no copy). Only fields
    that hold something are written: an empty `labels` map given to a constructor as `{}`
    costs as much as the rest of the message."""
    message.name = EXECUTIONS + record.id
    message.workflow = WORKFLOWS + record.workflow
    message.workflow_version = record.version
    message.state = execution_state_to_proto(record.state)
    if record.priority:
        message.priority = record.priority
    if record.last_sequence:
        message.last_sequence = record.last_sequence
    if record.request_id:
        message.request_id = record.request_id
    if record.parent_id:
        message.parent = EXECUTIONS + record.parent_id
    if record.parent_node:
        message.parent_node_id = record.parent_node
    if record.labels:
        message.labels.update(record.labels)
    set_value(message.input, record.input)
    # A submessage is only touched when it gets a value: reading the field builds it.
    if record.output is not None:
        set_value(message.output, record.output)
    if record.error:
        set_error(message.error, record.error)
    if record.vars:
        set_struct(message.vars, record.vars)
    set_time(message.create_time, record.created_at)
    if record.started_at is not None:
        set_time(message.start_time, record.started_at)
    if record.ended_at is not None:
        set_time(message.end_time, record.ended_at)
    if record.deadline is not None:
        set_time(message.expire_time, record.deadline)


def node_to_proto(record: NodeRecord) -> ex_pb.NodeExecution:
    message = ex_pb.NodeExecution(
        node_id=record.node_id,
        state=node_state_to_proto(record.state),
        attempt=record.attempt,
        skip_reason=record.skip_reason or "",
    )
    if record.input is not None:
        set_value(message.input, record.input)
    if record.output is not None:
        set_value(message.output, record.output)
    set_error(message.error, record.error)
    set_time(message.start_time, record.started_at)
    set_time(message.end_time, record.ended_at)
    set_time(message.wake_time, record.wake_at)
    return message


# Execution traces ----------------------------------------------------------------
def _set_duration(target: Any, seconds: float | None) -> None:
    if seconds is not None:
        target.FromNanoseconds(round(seconds * 1e9))


def trace_to_proto(view: Any) -> ex_pb.ExecutionTrace:
    """An `agentrun.server.observability.trace_view.TraceView` as an ExecutionTrace."""
    message = ex_pb.ExecutionTrace(
        execution=execution_to_proto(view.execution), trace_id=view.trace_id, usage=view.usage
    )
    for node in view.nodes:
        out = message.nodes.add(
            node_id=node.node_id,
            state=node_state_to_proto(node.state),
            usage=node.usage,
            skip_reason=node.skip_reason,
        )
        set_time(out.ready_time, node.ready)
        set_time(out.end_time, node.end)
        _set_duration(out.queue_duration, node.queued_seconds)
        for attempt in node.attempts:
            a = out.attempts.add(
                attempt=attempt.attempt,
                outcome=node_state_to_proto(attempt.outcome) if attempt.outcome else 0,
                rate_limited=attempt.rate_limited,
            )
            set_time(a.start_time, attempt.start)
            set_time(a.end_time, attempt.end)
            set_error(a.error, attempt.error)
            _set_duration(a.queue_duration, attempt.queued_seconds)
            _set_duration(a.retry_delay, attempt.retry_delay)
    return message


# Events ------------------------------------------------------------------------
# Events whose `data` is larger than this carry no typed copies of their values.
INLINE_VALUES_BYTES = 64 * 1024
MAX_EVENT_BYTES = 60 * 1024 * 1024


def _shrink(data: dict[str, Any], budget: int) -> dict[str, Any]:
    """`data` with its largest values replaced by {truncated, bytes} until it fits."""
    sizes = sorted(((to_value(v).ByteSize(), k) for k, v in data.items()), reverse=True)
    total = sum(size for size, _ in sizes)
    out = dict(data)
    for size, key in sizes:
        if total <= budget:
            break
        out[key] = {"truncated": True, "bytes": size}
        total -= size
    return out


def event_to_proto(
    record: EventRecord, *, max_bytes: int = MAX_EVENT_BYTES
) -> ex_pb.ExecutionEvent:
    """The event; values too large for one message are replaced by `{truncated, bytes}`
    (GetExecution returns them whole)."""
    message = ex_pb.ExecutionEvent(
        execution=EXECUTIONS + record.execution_id,
        sequence=record.sequence,
        type=record.type,
        node_id=record.node_id or "",
    )
    set_time(message.time, record.time)
    data = record.data or {}
    inline = True
    if data:
        set_struct(message.data, data)
        size = message.data.ByteSize()
        if size > max_bytes:
            data = _shrink(data, max_bytes)
            message.ClearField("data")
            set_struct(message.data, data)
            size = message.data.ByteSize()
        inline = size <= INLINE_VALUES_BYTES
    if not inline:
        data = {k: v for k, v in data.items() if k not in ("output", "input", "data")}
    kind, _, what = record.type.partition(".")
    payload: Any = None
    attempt = data.get("attempt")
    attempt = int(attempt) if isinstance(attempt, (int, float)) else 0
    if kind == "execution":
        payload = message.execution_state_changed
        try:
            payload.state = execution_state_to_proto(what.upper())
        except ValueError:
            payload.state = ex_pb.Execution.STATE_UNSPECIFIED
        if "output" in data:
            set_value(payload.output, data["output"])
        set_error(payload.error, data.get("error"))
    elif kind == "node":
        if what == "running":
            payload = message.node_started
            payload.attempt = attempt
            if "input" in data:
                set_value(payload.input, data["input"])
        elif what == "succeeded":
            payload = message.node_succeeded
            payload.attempt = attempt
            if "output" in data:
                set_value(payload.output, data["output"])
        elif what == "failed":
            payload = message.node_failed
            payload.attempt = attempt
            set_error(payload.error, data.get("error"))
        elif what == "retrying":
            payload = message.node_retrying
            payload.attempt = attempt
            set_error(payload.error, data.get("error"))
            delay = data.get("delay")
            if isinstance(delay, (int, float)):
                payload.delay.FromNanoseconds(int(delay * 1e9))
            else:
                payload.delay.SetInParent()
        elif what == "skipped":
            payload = message.node_skipped
            payload.skip_reason = str(data.get("skip_reason") or "")
            if "output" in data:
                set_value(payload.output, data["output"])
        else:
            payload = message.node_state_changed
            payload.state = node_state_to_proto(what.upper())
            payload.attempt = attempt
    elif record.type == "signal.received":
        payload = message.signal_received
        payload.signal = str(data.get("signal") or "")
        if "data" in data:
            set_value(payload.data, data["data"])
        payload.signal_id = str(data.get("signal_id") or "")
    if payload is not None:
        payload.SetInParent()
    return message


def json_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def wait_to_proto(view: Any) -> ex_pb.Wait:
    """An `approvals.WaitView` as a `Wait`."""
    ref = view.ref
    out = ex_pb.Wait(
        wait_id=ref.id,
        execution=execution_name(ref.execution_id),
        node_id=ref.node_id,
        attempt=ref.attempt,
        signal=view.signal,
        workflow=view.workflow,
    )
    if ref.map_index is not None:
        out.map_index = ref.map_index
    set_time(out.start_time, view.since)
    if view.timeout_at is not None:
        set_time(out.timeout_time, view.timeout_at)
    if view.schema is not None:
        set_struct(out.schema, view.schema)
    return out
