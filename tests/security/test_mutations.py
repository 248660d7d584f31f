"""Mutation fuzzing: the serialized typed specs of the examples, and a start request, with
bytes flipped, cut or duplicated at random, sent to CreateWorkflow / StartExecution. Whatever
parses is validated, whatever does not is refused; no mutation may answer INTERNAL or UNKNOWN
(tests/conftest.py) or stall or crash the server (tests/security/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrun.engine import load_workflow
from agentrun.server.convert import to_value
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import workflow_service_pb2 as ws
from tests.security.conftest import EX, WF, Harness

EXAMPLES = Path(__file__).parents[2] / "examples"
SEEDS = [
    ws.CreateWorkflowRequest(spec=load_workflow(path.read_text())).SerializeToString()
    for path in sorted(EXAMPLES.glob("*_workflow.yaml"))
    + sorted(EXAMPLES.glob("*_saga.yaml"))
    + sorted(EXAMPLES.glob("*_machine.yaml"))
]
START = es.StartExecutionRequest(
    workflow="workflows/seed", input=to_value({"n": 1, "l": [1.5, "x", {"k": None}]})
).SerializeToString()

# Everything a caller may legitimately get back from a mutated request.
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["set", "cut", "repeat", "insert"]))
        if how == "set":
            data[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif how == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=mutated(SEEDS))
def test_mutated_specs(harness: Harness, data: bytes) -> None:
    outcome = harness.call(WF + "CreateWorkflow", data)
    assert outcome.code in ANSWERS, str(outcome)


@FUZZ
@given(data=mutated(SEEDS))
def test_mutated_specs_validated(harness: Harness, data: bytes) -> None:
    outcome = harness.call(WF + "ValidateWorkflow", data)
    assert outcome.code in ANSWERS, str(outcome)


@FUZZ
@given(data=mutated([START]))
def test_mutated_starts(harness: Harness, data: bytes) -> None:
    outcome = harness.call(EX + "StartExecution", data)
    assert outcome.code in ANSWERS, str(outcome)


def test_the_seeds_are_valid(harness: Harness) -> None:
    assert len(SEEDS) >= 4
    for data in SEEDS:
        outcome = harness.call(WF + "ValidateWorkflow", data)
        assert outcome.code == grpc.StatusCode.OK, str(outcome)
