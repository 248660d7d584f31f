"""Converters: JSON values keep ints, events get typed payloads, oversize values shrink."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun.server import convert, requests
from agentrun.storage.records import EventRecord, ExecutionRecord, ExecutionState


def test_values_round_trip_with_ints() -> None:
    value = {"i": 2, "f": 2.5, "big": 2**40, "l": [1, {"x": None}], "b": False, "e": {}, "s": ""}
    assert convert.from_value(convert.to_value(value)) == value
    assert isinstance(convert.from_value(convert.to_value(3.0)), int)


def test_execution_fields() -> None:
    record = ExecutionRecord(
        id="e1",
        tenant="t",
        workflow="w",
        version=2,
        state=ExecutionState.TIMED_OUT,
        input={"a": 1},
        created_at=10.5,
        error={"type": "timeout", "message": "late", "node": "n"},
        parent_id="p",
        labels={"rerun_of": "e0"},
        last_sequence=7,
    )
    message = convert.execution_to_proto(record)
    assert message.name == "executions/e1" and message.workflow == "workflows/w"
    assert message.state == message.STATE_TIMED_OUT
    assert message.error.node_id == "n" and message.parent == "executions/p"
    assert message.create_time.ToNanoseconds() == 10_500_000_000
    assert not message.HasField("output") and not message.HasField("end_time")


def test_typed_payloads() -> None:
    def event(type: str, data: dict | None = None, node: str | None = "n") -> object:
        return convert.event_to_proto(EventRecord("e", 1, type, 1.0, node, data))

    assert event("node.succeeded", {"attempt": 2, "output": 5}).node_succeeded.attempt == 2
    retrying = event("node.retrying", {"attempt": 1, "delay": 1.5, "error": {"type": "x"}})
    assert retrying.node_retrying.delay.ToNanoseconds() == 1_500_000_000
    assert event("node.waiting").WhichOneof("payload") == "node_state_changed"
    assert event("node.skipped", {"skip_reason": "when"}).node_skipped.skip_reason == "when"
    changed = event("execution.failed", {"error": {"type": "boom"}}, None)
    assert changed.execution_state_changed.error.type == "boom"
    signal = event("signal.received", {"signal": "go", "data": {"ok": True}}, None)
    assert signal.signal_received.signal == "go"


def test_oversize_values_are_truncated() -> None:
    record = EventRecord("e", 9, "execution.succeeded", 1.0, None, {"output": "x" * 100_000})
    message = convert.event_to_proto(record, max_bytes=10_000)
    output = convert.from_struct(message.data)["output"]
    assert output["truncated"] is True and output["bytes"] > 100_000
    assert message.ByteSize() < 10_000
    big = convert.event_to_proto(record)
    # Over the inline limit the typed payload carries no copy of the value.
    assert not big.execution_state_changed.HasField("output")
    assert convert.from_struct(big.data)["output"] == "x" * 100_000


def test_store_errors_are_unavailable_and_bugs_internal() -> None:
    from agentrun.server.errors import to_status
    from agentrun.storage.base import StoreError

    assert to_status(StoreError("disk full")).code == 14  # UNAVAILABLE
    internal = to_status(KeyError("secret detail"))
    assert internal.code == 13 and "secret" not in internal.message


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=1e9, max_value=253_402_300_799, allow_nan=False))
def test_times_read_back_as_the_float_stored(seconds: float) -> None:
    """A create_time sent back as a ListExecutions bound reads as the stored float exactly, so
    `created_after = e.create_time` includes e and `created_before` excludes it; the old
    `FromNanoseconds(round(seconds * 1e9))` missed by a float step for ~7% of today's times.
    (From 2001 on: a float of less than ~4.5e6 s holds finer than a nanosecond.)"""
    stamp = Timestamp()
    convert.set_time(stamp, seconds)
    assert 0 <= stamp.nanos <= 999_999_999
    assert requests.time_bound(stamp, "created_after") == seconds
