"""Values a step produces at run time that one store could hold and another not (NaN and
infinities, which JSON lacks; NUL characters, which PostgreSQL refuses): the step fails with a
clear error on every backend, and the execution ends (it stayed PENDING forever on PostgreSQL,
its commit failing), with its events, trace and watch readable."""

from __future__ import annotations

import grpc
import pytest

from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import execution_service_pb2 as es
from tests.security.conftest import EX, Harness

PRODUCED = {
    "nan": 'double("NaN")',
    "inf": 'double("Infinity")',
    "division": "1.0 / 0.0",
    "nul": '"a\\u0000b"',
    "nul-key": '{"k\\u0000": 1}',
    "nan-in-list": '[1.0, double("-Infinity")]',
}
PLACES = {
    "pass": "    pass: {{value: '${{{{ {expr} }}}}'}}\n",
    "output": "    pass: {{value: 1}}\n    output: '${{{{ {expr} }}}}'\n",
    "interpolated": "    pass: {{value: 'x ${{{{ {expr} }}}} y'}}\n",
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", list(PRODUCED))
def test_unstorable_results_fail_the_node(harness: Harness, kind: str, place: str) -> None:
    if place == "interpolated" and kind in ("nan", "inf", "division", "nan-in-list"):
        pytest.skip("numbers interpolate as text")
    name = f"made-{kind}-{place}"
    body = PLACES[place].format(expr=PRODUCED[kind])
    created = harness.create_workflow(f"name: {name}\nnodes:\n  - id: a\n{body}")
    assert created.code == grpc.StatusCode.OK, str(created)
    started = harness.start(name, {})
    assert started.code == grpc.StatusCode.OK, str(started)
    execution_name = started.response(es.StartExecutionResponse).execution.name
    execution = harness.wait_final(execution_name)
    assert ex_pb.Execution.State.Name(execution.state) == "STATE_FAILED", execution
    assert "cannot be stored" in execution.error.message, execution.error
    for outcome in (
        harness.events(execution_name),
        harness.call(EX + "GetExecutionTrace", es.GetExecutionTraceRequest(name=execution_name)),
        harness.stream(EX + "WatchExecution", es.WatchExecutionRequest(name=execution_name)),
    ):
        assert outcome.code == grpc.StatusCode.OK, str(outcome)
