"""Requests that are not valid messages: malformed bytes, invalid UTF-8 in a string field,
nesting past protobuf's recursion limit. Each answers INVALID_ARGUMENT (field `request`) with a
message naming no Python class, on every method of every service."""

from __future__ import annotations

import grpc
import pytest

from agentrun.v1 import execution_service_pb2, state_machine_service_pb2, workflow_service_pb2
from tests.security.conftest import Harness

_SERVICES = [
    service
    for module in (workflow_service_pb2, execution_service_pb2, state_machine_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS = [
    (f"{service.full_name}/{method.name}", method.server_streaming)
    for service in _SERVICES
    for method in service.methods
] + [("grpc.health.v1.Health/Check", False)]
# Each request's first string field: where invalid UTF-8 goes.
STRING_FIELDS = {
    f"{service.full_name}/{method.name}": next(
        (f.number for f in method.input_type.fields if f.type == f.TYPE_STRING), None
    )
    for service in _SERVICES
    for method in service.methods
}

BAD_BYTES = {
    # the issue's own case: field 2 (CreateWorkflowRequest.source), bytes that are not UTF-8
    "invalid-utf8": b"\x12\x03\xff\xfe\x80",
    # a length that runs past the end of the message
    "truncated": b"\x0a\x05ab",
    # a varint that never ends
    "endless-varint": b"\x08" + b"\xff" * 11,
    # wire type 7 does not exist
    "bad-wire-type": b"\x0f\x01",
    # field number 0 is not allowed
    "field-zero": b"\x02\x00",
}


def _nested(depth: int) -> bytes:
    """Field 1, a message containing field 1, ... `depth` deep (any message-typed field 1)."""
    data = b""
    for _ in range(depth):
        data = b"\x0a" + _varint(len(data)) + data
    return data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _assert_refused(h: Harness, method: str, streaming: bool, data: bytes) -> None:
    outcome = h.stream(method, data) if streaming else h.call(method, data)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, str(outcome)
    assert "class" not in outcome.message and "Error" not in outcome.message, outcome.message
    assert outcome.fields == ["request"], str(outcome)


@pytest.mark.parametrize("kind", list(BAD_BYTES))
@pytest.mark.parametrize(("method", "streaming"), METHODS, ids=[m for m, _ in METHODS])
def test_malformed_bytes(harness: Harness, method: str, streaming: bool, kind: str) -> None:
    data = BAD_BYTES[kind]
    if kind == "invalid-utf8":
        number = STRING_FIELDS.get(method)
        if number is None:
            pytest.skip("this request has no string field")
        data = _varint(number << 3 | 2) + data[1:]
    _assert_refused(harness, method, streaming, data)


_INPUT = execution_service_pb2.StartExecutionRequest.DESCRIPTOR.fields_by_name["input"].number


def _deep_value(depth: int) -> bytes:
    """StartExecutionRequest with `input` (a Value) nested `depth` lists deep (two messages a
    level: protobuf's parser stops at 100 messages)."""
    value = b""
    for _ in range(depth):
        values = b"\x0a" + _varint(len(value)) + value  # ListValue.values
        value = b"\x32" + _varint(len(values)) + values  # Value.list_value
    field = _varint(_INPUT << 3 | 2)
    return b"\x0a\x0eworkflows/seed" + field + _varint(len(value)) + value


@pytest.mark.parametrize("depth", [50, 101, 5000, 50_000])
def test_value_nested_past_the_limit(harness: Harness, depth: int) -> None:
    _assert_refused(
        harness, "agentrun.v1.ExecutionService/StartExecution", False, _deep_value(depth)
    )


def test_value_nested_within_the_limit_is_accepted(harness: Harness) -> None:
    deep: list = []
    for _ in range(40):
        deep = [deep]
    outcome = harness.start("seed", {"n": 1, "deep": deep})
    assert outcome.code == grpc.StatusCode.OK, str(outcome)


@pytest.mark.parametrize("depth", [150, 10_000])
def test_messages_nested_past_the_limit(harness: Harness, depth: int) -> None:
    # CreateWorkflowRequest.spec (1) is a message; its field 1 is a string: the parser
    # refuses either at the recursion limit or at the first bad field.
    _assert_refused(harness, "agentrun.v1.WorkflowService/CreateWorkflow", False, _nested(depth))
