"""Values a typed WorkflowSpec's fields can hold but mean nothing: every enum field given an
unknown number, NaN and infinities in doubles, Durations with mixed signs. Each is refused at
validation (INVALID_ARGUMENT, reason INVALID_WORKFLOW) with the field's path, over gRPC, for a
typed spec and for YAML source; never INTERNAL (a KeyError in the compiler) or accepted."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.server import AgentrunServer
from agentrun.spec_words import word
from agentrun.v1 import workflow_pb2 as wf
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc


def _enum_fields(desc: Descriptor, prefix: str, seen: frozenset[str]) -> list[str]:
    """Every enum field reachable from `desc`, as a path of field names (each message type
    once per branch, so recursive types end)."""
    paths: list[str] = []
    for field in desc.fields:
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.type == FieldDescriptor.TYPE_ENUM:
            paths.append(path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target = field.message_type
            if target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
            if target is None or target.full_name.startswith("google.protobuf."):
                continue
            if target.full_name not in seen:
                paths += _enum_fields(target, path, seen | {target.full_name})
    return paths


ENUM_FIELDS = _enum_fields(wf.WorkflowSpec.DESCRIPTOR, "", frozenset({"agentrun.v1.WorkflowSpec"}))


def _spec_with(path: str, value: Any, **siblings: Any) -> tuple[wf.WorkflowSpec, str]:
    """A small valid spec with the field at `path` set to `value` (and `siblings` set on the
    same message); and the path the server should report (with indexes and map keys)."""
    spec = wf.WorkflowSpec(name="bad-enum")
    spec.nodes.add(id="a")  # the walk refuses before the compiler looks at kinds
    msg: Any = spec
    where: list[str] = []
    names = path.split(".")
    for name in names[:-1]:
        field = msg.DESCRIPTOR.fields_by_name[name]
        container = getattr(msg, name)
        said = word(field)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            msg = container["k"]
            where.append(f"{said}.k")
        elif _repeated(field):
            msg = container[0] if len(container) else container.add()
            where.append(f"{said}[0]")
        else:
            msg = container
            where.append(said)
    setattr(msg, names[-1], value)
    for name, sibling in siblings.items():
        setattr(msg, name, sibling)
    where.append(word(msg.DESCRIPTOR.fields_by_name[names[-1]]))
    return spec, ".".join(where)


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _refusal(exc: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", []
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def _create(server: AgentrunServer, request: ws.CreateWorkflowRequest) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return await ws_grpc.WorkflowServiceStub(channel).CreateWorkflow(request)


def test_the_walk_finds_the_enums_the_issue_names() -> None:
    for path in (
        "mode",
        "nodes.join",
        "nodes.retry.backoff",
        "nodes.retry.jitter",
        "concurrency.on_limit",
        "nodes.aggregate.strategy",
        "error_handlers.on_timeout",
        "compensation.strategy",
    ):
        assert path in ENUM_FIELDS


@pytest.mark.parametrize("path", ENUM_FIELDS)
async def test_unknown_enum_number_is_refused_with_its_path(
    server: AgentrunServer, path: str
) -> None:
    spec, where = _spec_with(path, 99)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(server, ws.CreateWorkflowRequest(spec=spec))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    reason, fields = _refusal(refused.value)
    assert reason == "INVALID_WORKFLOW"
    assert where in fields, (where, fields)
    assert "unknown value 99" in refused.value.details()


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("nodes.retry.multiplier", float("nan"), "finite"),
        ("nodes.retry.multiplier", float("inf"), "finite"),
        ("defaults.retry.multiplier", float("-inf"), "finite"),
        ("error_handlers.retry.multiplier", float("nan"), "finite"),
    ],
)
async def test_non_finite_numbers_are_refused(
    server: AgentrunServer, path: str, value: float, problem: str
) -> None:
    spec, where = _spec_with(path, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(server, ws.CreateWorkflowRequest(spec=spec))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert where in _refusal(refused.value)[1]
    assert problem in refused.value.details()


@pytest.mark.parametrize(
    ("seconds", "nanos", "problem"),
    [
        (1, -500, "same sign"),
        (-1, 500, "same sign"),
        (0, 1_000_000_000, "nanos"),
        (400_000_000_000, 0, "out of range"),
    ],
)
async def test_malformed_durations_are_refused(
    server: AgentrunServer, seconds: int, nanos: int, problem: str
) -> None:
    spec = wf.WorkflowSpec(name="bad-duration")
    node = spec.nodes.add(id="a")
    node.timeout.seconds = seconds
    node.timeout.nanos = nanos
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(server, ws.CreateWorkflowRequest(spec=spec))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nodes[0].timeout" in _refusal(refused.value)[1]
    assert problem in refused.value.details()


@pytest.mark.parametrize("number", [".nan", ".inf", "-.inf"])
async def test_yaml_nan_and_infinity_are_refused(server: AgentrunServer, number: str) -> None:
    source = f"""
name: nan-retry
nodes:
  - id: a
    pass: {{value: 1}}
    retry: {{max_attempts: 2, multiplier: {number}}}
"""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(server, ws.CreateWorkflowRequest(source=source))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nodes[0].retry.multiplier" in _refusal(refused.value)[1], refused.value.details()
