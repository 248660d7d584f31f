"""`records.copier`: the shallow copies the memory store makes of every record it keeps."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
    WorkflowRecord,
    copier,
)

_RECORDS = [
    WorkflowRecord("t", "wf", 3, {"nodes": []}, 1.5, "d"),
    ExecutionRecord(
        "ex",
        "t",
        "wf",
        1,
        ExecutionState.RUNNING,
        {"a": 1},
        2.0,
        output=[1],
        owner="r1",
        lease_epoch=4,
        labels={"k": "v"},
        last_sequence=9,
    ),
    NodeRecord("ex", "n", NodeState.SUCCEEDED, 2, None, {"i": 1}, completed_order=5),
    EventRecord("ex", 7, "node.succeeded", 3.0, "n", {"attempt": 2}),
    SignalRecord("ex", "go", {"x": 1}, "s1", 4.0, seq=2, consumed_by="w"),
]


@pytest.mark.parametrize("record", _RECORDS, ids=lambda r: type(r).__name__)
def test_a_copy_has_every_field_and_is_its_own(record) -> None:
    made = copier(type(record))(record)
    assert type(made) is type(record)
    assert made is not record
    assert made == record
    for f in dataclasses.fields(record):
        assert getattr(made, f.name) is getattr(record, f.name)  # shallow: payloads shared
    first = dataclasses.fields(record)[0].name
    setattr(made, first, "changed")
    assert getattr(record, first) != "changed"


def test_copy_copy_of_an_execution_record_uses_it() -> None:
    record = _RECORDS[1]
    assert copy.copy(record) == record and copy.copy(record) is not record
