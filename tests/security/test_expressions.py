"""Hostile expressions and data over gRPC, on SQLite and PostgreSQL (issue 13, items 1, 2, 6, 8).

Each case goes through the real server of the security harness: its health probe must keep being
answered (no case may stall the loop), stored executions stay readable, and nothing answers
INTERNAL or UNKNOWN."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import workflow_service_pb2 as ws
from tests.engine.test_secret_scope import CANARY, _encodings
from tests.engine.test_secret_scope import ENCODINGS as SCOPE_ENCODINGS
from tests.security.conftest import EX, WF, Harness

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _pass(name: str, expr: str) -> str:
    return f'name: {name}\nnodes:\n  - id: a\n    pass: {{value: "${{{{ {expr} }}}}"}}\n'


def _run(harness: Harness, source: str, input: Any) -> Any:
    name = source.split("\n", 1)[0].removeprefix("name: ")
    created = harness.create_workflow(source)
    assert created.code == OK, str(created)
    started = harness.start(name, input)
    assert started.code == OK, str(started)
    return harness.wait_final(
        started.response(es.StartExecutionResponse).execution.name, timeout=60
    )


def _failed_with(execution: Any) -> tuple[str, str]:
    assert ex_pb.Execution.State.Name(execution.state) == "STATE_FAILED", execution
    return execution.error.type, execution.error.message


# -- item 1: the cost of an expression is bounded before it runs ------------------------------

COSTLY = [
    ("size(input.l.filter(x, x in input.l))", {"l": list(range(10_000))}),
    ("input.l.map(x, x)", {"l": list(range(5_000))}),
    (" + ".join(["input.s"] * 100), {"s": "s" * 900_000}),
    ("input.s.matches(input.p)", {"s": "a" * 500_000, "p": "(a|aa)*b" * 500}),
    (
        "input.m.exists(k, input.m[k] in input.l)",
        {"m": {str(i): i for i in range(3000)}, "l": list(range(3000))},
    ),
]


@pytest.mark.parametrize(
    ("expr", "input"), COSTLY, ids=["quadratic-in", "map-5000", "concat-chain", "regex", "map-keys"]
)
def test_a_costly_expression_fails_its_node_without_stalling_the_server(
    harness: Harness, expr: str, input: Any
) -> None:
    execution = _run(harness, _pass(_name("cost"), expr), input)
    kind, message = _failed_with(execution)
    assert kind == "expression_error" and message.startswith("cost limit exceeded"), message


# -- item 2: sizes ----------------------------------------------------------------------------


def test_the_100_mb_map_fails_and_the_executions_stay_readable(harness: Harness) -> None:
    execution = _run(
        harness,
        _pass(_name("huge"), "input.l.map(x, input.s)"),
        {"l": list(range(2_000)), "s": "s" * 50_000},
    )
    _failed_with(execution)
    got = harness.call(
        EX + "GetExecution", es.GetExecutionRequest(name=execution.name, include_nodes=True)
    )
    assert got.code == OK, str(got)
    listed = harness.call(EX + "ListExecutions", es.ListExecutionsRequest(page_size=1000))
    assert listed.code == OK, str(listed)
    assert harness.events(execution.name).code == OK


def test_an_oversize_output_fails_with_output_too_large(harness: Harness) -> None:
    execution = _run(harness, _pass(_name("big"), "input.s + input.s"), {"s": "s" * 600_000})
    kind, message = _failed_with(execution)
    assert kind == "output_too_large" and "the limit is 1048576 bytes" in message, message
    got = harness.call(
        EX + "GetExecution", es.GetExecutionRequest(name=execution.name, include_nodes=True)
    )
    assert got.code == OK and len(got.responses[0]) < 1024 * 1024, str(got)


def test_an_oversize_input_and_signal_data_are_refused(harness: Harness) -> None:
    hold = _name("hold")
    assert (
        harness.create_workflow(f"name: {hold}\nnodes:\n  - {{id: w, wait: {{signal: go}}}}\n").code
        == OK
    )
    refused = harness.start(hold, {"s": "s" * (1024 * 1024 + 1)})
    assert refused.code == INVALID and refused.fields == ["input"], str(refused)
    started = harness.start(hold, {})
    name = started.response(es.StartExecutionResponse).execution.name
    request = es.SignalExecutionRequest(name=name, signal="go")
    request.data.string_value = "s" * (1024 * 1024 + 1)
    signalled = harness.call(EX + "SignalExecution", request)
    assert signalled.code == INVALID and "data_limits.signal_bytes" in signalled.message, str(
        signalled
    )
    harness.call(EX + "CancelExecution", es.CancelExecutionRequest(name=name))


# -- item 6: secrets, in every encoding CEL can make --------------------------------------------

# The encodings the engine-level tests refuse, sent over gRPC here.
ENCODINGS = [e for e in SCOPE_ENCODINGS if "input." not in e]


@pytest.mark.parametrize("expr", ENCODINGS)
@pytest.mark.parametrize("where", ["pass", "tool"])
def test_a_transformed_or_stored_secret_is_refused_at_validation(
    harness: Harness, expr: str, where: str
) -> None:
    name = _name("leak")
    if where == "pass":
        source = _pass(name, expr)
        path = "nodes[0].pass.value"
    else:
        source = f'name: {name}\nnodes:\n  - {{id: a, tool: {{name: core.echo, args: {{v: "${{{{ {expr} }}}}"}}}}}}\n'
        path = "nodes[0].tool.args.v"
    refused = harness.create_workflow(source)
    assert refused.code == INVALID, str(refused)
    assert any(f.endswith(path) for f in refused.fields), str(refused)
    assert "secret" in refused.message


@pytest.fixture
def canary_secret(harness: Harness) -> Iterator[None]:
    """The harness's engine reads `secrets.tok` (the canary) for the length of one case."""
    from agentrun.engine.redact import Redactor

    engine = harness.server.engine

    async def set_secrets(values: dict[str, str]) -> None:
        engine.secrets = values
        engine.redactor = Redactor(values.values())

    harness.run(set_secrets({"tok": CANARY}))
    try:
        yield
    finally:
        harness.run(set_secrets({}))


def test_a_canary_sent_where_secrets_belong_reaches_no_response_log_or_row(
    harness: Harness, canary_secret: None
) -> None:
    name = _name("canary")
    source = (
        f"name: {name}\nnodes:\n"
        "  - id: a\n    tool: {name: core.echo, args: {auth: 'Bearer ${{ secrets.tok }}', "
        "u: \"${{ input.url + '?t=' + secrets.tok }}\"}}\n"
        "  - {id: b, agent: {model: mock/echo, prompt: 'say ${{ secrets.tok }}'}}\n"
    )
    execution = _run(harness, source, {"url": "https://x.test/p"})
    assert ex_pb.Execution.State.Name(execution.state) == "STATE_SUCCEEDED", execution
    assert harness.events(execution.name).code == OK
    got = harness.call(
        EX + "GetExecution", es.GetExecutionRequest(name=execution.name, include_nodes=True)
    )
    assert b"Bearer [REDACTED]" in got.responses[0]
    hits = {needle: harness.scan(needle) for _, needle in _encodings(CANARY)}
    assert {k: v for k, v in hits.items() if v} == {}


# -- item 8: unknown functions, SQL templates ---------------------------------------------------


@pytest.mark.parametrize(
    "call", ["exec('id')", "__import__('os')", "open('/etc/passwd')", "input.x.system()"]
)
def test_an_unknown_function_is_refused_with_its_path(harness: Harness, call: str) -> None:
    refused = harness.create_workflow(_pass(_name("fn"), call))
    assert refused.code == INVALID, str(refused)
    assert any(f.endswith("nodes[0].pass.value") for f in refused.fields), str(refused)
    assert "unknown function" in refused.message


def test_a_template_in_sql_text_is_a_warning(harness: Harness) -> None:
    source = (
        f"name: {_name('sql')}\nnodes:\n  - id: q\n    tool:\n      name: sql.query\n"
        "      args: {database: main, query: 'SELECT * FROM t WHERE id = ${{ input.id }}'}\n"
    )
    validated = harness.call(WF + "ValidateWorkflow", ws.ValidateWorkflowRequest(source=source))
    assert validated.code == OK, str(validated)
    response = validated.response(ws.ValidateWorkflowResponse)
    assert response.valid
    assert [w.field for w in response.warnings] == ["nodes[0].tool.args.query"]
