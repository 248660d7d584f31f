"""Well-formed requests holding values that mean nothing or cannot be delivered, as data
tables by class: unknown enum numbers, NaN and infinities, mixed-sign durations, NUL
characters, huge names, filters and lists, unknown references. Each is answered with the
status the table says (never INTERNAL or UNKNOWN: tests/conftest.py), with its field path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message as pb_message

from agentrun.server.convert import to_value
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import state_machine_service_pb2 as sms
from agentrun.v1 import workflow_pb2 as wf
from agentrun.v1 import workflow_service_pb2 as ws
from tests.security.conftest import EX, SM, WF, Harness
from tests.server.test_spec_values import ENUM_FIELDS, _spec_with

WAITER = """
name: waiter
nodes:
  - id: hold
    wait: {signal: go}
"""

LIGHT = """
name: light
mode: state_machine
initial: red
states:
  red:
    on: {NEXT: {target: green}}
  green:
    on: {NEXT: {target: red}}
"""


@dataclass
class Ctx:
    """Resources the cases point at, made once per backend."""

    h: Harness
    waiting: str  # an execution waiting for signal `go`
    finished: str  # a SUCCEEDED execution of `seed`
    instance: str  # a state machine instance of `light`


_CTX: dict[str, Ctx] = {}


@pytest.fixture
def ctx(harness: Harness) -> Ctx:
    if harness.backend not in _CTX:
        for source in (WAITER, LIGHT):
            created = harness.create_workflow(source)
            assert created.code == grpc.StatusCode.OK, str(created)
        started = harness.start("waiter", {})
        assert started.code == grpc.StatusCode.OK, str(started)
        instance = harness.call(
            SM + "CreateInstance", sms.CreateInstanceRequest(workflow="workflows/light")
        )
        assert instance.code == grpc.StatusCode.OK, str(instance)
        _CTX[harness.backend] = Ctx(
            harness,
            waiting=started.response(es.StartExecutionResponse).execution.name,
            finished=harness.stored[0],
            instance=instance.response(sms.CreateInstanceResponse).instance.name,
        )
    return _CTX[harness.backend]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    build: Callable[[Ctx], pb_message.Message]
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    field: str | None = None  # a BadRequest violation's path starts with this
    text: str = ""  # in the status message
    streaming: bool = False
    response_has: str = ""  # for OK answers that report problems (ValidateWorkflow)


def _send(c: Ctx, case: Case) -> Any:
    request = case.build(c)
    if case.streaming:
        # A watch of a live instance never ends: its OK is "no error within the deadline",
        # and every refusal comes at once, so a short deadline checks as much.
        return c.h.stream(case.method, request, limit=1, timeout=2)
    return c.h.call(case.method, request)


def _check(c: Ctx, case: Case) -> None:
    outcome = _send(c, case)
    assert outcome.code == case.code, str(outcome)
    if case.response_has:
        assert case.response_has.encode() in outcome.responses[0], str(outcome)
    if case.field is not None:
        assert any(f.startswith(case.field) for f in outcome.fields), str(outcome)
    assert case.text in outcome.message, str(outcome)
    # Deliverable: a bounded message and at most 100 problems plus a count.
    assert len(outcome.message) <= 1000, len(outcome.message)
    assert len(outcome.fields) <= 101


def _start(input: Any, workflow: str = "seed") -> Callable[[Ctx], pb_message.Message]:
    return lambda c: es.StartExecutionRequest(
        workflow=f"workflows/{workflow}", input=to_value(input)
    )


def _signal(data: Any = None, **fields: Any) -> Callable[[Ctx], pb_message.Message]:
    def build(c: Ctx) -> pb_message.Message:
        request = es.SignalExecutionRequest(name=c.waiting, **{"signal": "go", **fields})
        if data is not None:
            request.data.CopyFrom(to_value(data))
        return request

    return build


def _event(data: Any = None, **fields: Any) -> Callable[[Ctx], pb_message.Message]:
    def build(c: Ctx) -> pb_message.Message:
        request = sms.SendEventRequest(name=c.instance, **{"event": "NEXT", **fields})
        if data is not None:
            request.data.CopyFrom(to_value(data))
        return request

    return build


def _instance(input: Any = None, data: Any = None) -> Callable[[Ctx], pb_message.Message]:
    def build(c: Ctx) -> pb_message.Message:
        request = sms.CreateInstanceRequest(workflow="workflows/light")
        if input is not None:
            request.input.CopyFrom(to_value(input))
        if data is not None:
            request.data.update(data)
        return request

    return build


def _source(text: str) -> Callable[[Ctx], pb_message.Message]:
    return lambda c: ws.CreateWorkflowRequest(source=text)


def _spec(spec: wf.WorkflowSpec, method: str = "create") -> Callable[[Ctx], pb_message.Message]:
    if method == "validate":
        return lambda c: ws.ValidateWorkflowRequest(spec=spec)
    return lambda c: ws.CreateWorkflowRequest(spec=spec)


def _pass_spec(name: str, value: Any) -> wf.WorkflowSpec:
    spec = wf.WorkflowSpec(name=name)
    node = spec.nodes.add(id="a")
    node.pass_node.value.CopyFrom(to_value(value))
    return spec


# -- NaN and infinities --------------------------------------------------------------------
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
YAML_NUMBER = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}


def _non_finite_cases(label: str, x: float) -> list[Case]:
    y = YAML_NUMBER[label]
    retry_spec, retry_path = _spec_with("nodes.retry.multiplier", x)
    return [
        Case(f"input-top-{label}", EX + "StartExecution", _start(x), field="input"),
        Case(
            f"input-nested-{label}",
            EX + "StartExecution",
            _start({"n": 1, "a": {"b": [1, x]}}),
            field="input.a.b[1]",
        ),
        Case(f"input-list-{label}", EX + "StartExecution", _start([x]), field="input[0]"),
        Case(f"signal-data-{label}", EX + "SignalExecution", _signal({"v": x}), field="data.v"),
        Case(f"event-data-{label}", SM + "SendEvent", _event({"v": x}), field="data.v"),
        Case(
            f"instance-input-{label}", SM + "CreateInstance", _instance({"v": x}), field="input.v"
        ),
        Case(
            f"instance-data-{label}",
            SM + "CreateInstance",
            _instance(data={"v": x}),
            field="data.v",
        ),
        Case(
            f"rerun-input-{label}",
            EX + "RerunExecution",
            lambda c: es.RerunExecutionRequest(name=c.finished, input=to_value({"n": x})),
            field="input.n",
        ),
        Case(
            f"spec-pass-value-{label}",
            WF + "CreateWorkflow",
            _spec(_pass_spec(f"nan-pass-{label.strip('-')}", {"v": x})),
            field="nodes[0].pass.value.v",
        ),
        Case(
            f"spec-multiplier-{label}", WF + "CreateWorkflow", _spec(retry_spec), field=retry_path
        ),
        Case(
            f"validate-multiplier-{label}",
            WF + "ValidateWorkflow",
            _spec(retry_spec, "validate"),
            grpc.StatusCode.OK,  # ValidateWorkflow reports problems in its answer
            response_has=retry_path,
        ),
        Case(
            f"yaml-multiplier-{label}",
            WF + "CreateWorkflow",
            _source(
                f"name: yaml-nan\nnodes:\n  - id: a\n    pass: {{value: 1}}\n"
                f"    retry: {{max_attempts: 2, multiplier: {y}}}\n"
            ),
            field="nodes[0].retry.multiplier",
        ),
        Case(
            f"yaml-pass-value-{label}",
            WF + "CreateWorkflow",
            _source(f"name: yaml-nan\nnodes:\n  - id: a\n    pass: {{value: {y}}}\n"),
            field="nodes[0].pass.value",
        ),
        Case(
            f"yaml-schema-default-{label}",
            WF + "CreateWorkflow",
            _source(
                "name: yaml-nan\ninput_schema:\n  type: object\n  properties:\n"
                f"    n: {{type: number, default: {y}}}\nnodes:\n  - id: a\n    pass: {{value: 1}}\n"
            ),
            field="input_schema",
        ),
    ]


NON_FINITE_CASES = [case for label, x in NON_FINITE.items() for case in _non_finite_cases(label, x)]


@pytest.mark.parametrize("case", NON_FINITE_CASES, ids=lambda c: c.id)
def test_non_finite_numbers(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- Durations with mixed signs or out of range -----------------------------------------------
DURATION_FIELDS = [
    "nodes.timeout",
    "nodes.total_timeout",
    "nodes.retry.initial_interval",
    "nodes.retry.max_interval",
    "defaults.timeout",
    "nodes.wait.timeout",
]
BAD_DURATIONS = {
    "seconds+nanos-": (1, -500, "same sign"),
    "seconds-nanos+": (-1, 500, "same sign"),
    "nanos-overflow": (0, 1_500_000_000, "nanos"),
    "past-10000-years": (400_000_000_000, 0, "out of range"),
}


DURATION_CASES = [
    Case(
        f"{path}-{label}",
        WF + "CreateWorkflow",
        _spec(spec),
        field=where.removesuffix(".seconds"),
        text=text,
    )
    for path in DURATION_FIELDS
    for label, (seconds, nanos, text) in BAD_DURATIONS.items()
    for spec, where in [_spec_with(path + ".seconds", seconds, nanos=nanos)]
]


@pytest.mark.parametrize("case", DURATION_CASES, ids=lambda c: c.id)
def test_malformed_durations(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- Unknown enum numbers in typed specs --------------------------------------------------------
ENUM_CASES = [
    Case(f"enum-{path}", WF + "CreateWorkflow", _spec(spec), field=where, text="unknown value 77")
    for path in ENUM_FIELDS
    for spec, where in [_spec_with(path, 77)]
]


@pytest.mark.parametrize("case", ENUM_CASES, ids=lambda c: c.id)
def test_unknown_enum_numbers(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- NUL characters -----------------------------------------------------------------------------
NUL = "a\x00b"
NUL_CASES = [
    Case("input-value", EX + "StartExecution", _start({"n": 1, "s": NUL}), field="input.s"),
    Case("input-key", EX + "StartExecution", _start({"n": 1, NUL: 1}), field="input"),
    Case("input-nested-key", EX + "StartExecution", _start({"o": {NUL: [1]}}), field="input.o"),
    Case("input-list-item", EX + "StartExecution", _start({"l": ["x", NUL]}), field="input.l[1]"),
    Case(
        "request-id",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(workflow="workflows/seed", request_id=NUL),
        field="request_id",
    ),
    Case("signal-name", EX + "SignalExecution", _signal(signal=NUL), field="signal"),
    Case("signal-data", EX + "SignalExecution", _signal({"k": NUL}), field="data.k"),
    Case("signal-data-key", EX + "SignalExecution", _signal({NUL: 1}), field="data"),
    Case("signal-id", EX + "SignalExecution", _signal(signal_id=NUL), field="signal_id"),
    Case("event-name", SM + "SendEvent", _event(event=NUL), field="event"),
    Case("event-data", SM + "SendEvent", _event({"k": NUL}), field="data.k"),
    Case("event-data-key", SM + "SendEvent", _event({NUL: 1}), field="data"),
    Case("event-id", SM + "SendEvent", _event(event_id=NUL), field="event_id"),
    Case("instance-input", SM + "CreateInstance", _instance({"k": NUL}), field="input.k"),
    Case("instance-data", SM + "CreateInstance", _instance(data={"k": NUL}), field="data.k"),
    Case(
        "source",
        WF + "CreateWorkflow",
        _source("name: nul\nnodes:\n  - id: a\n    pass: {value: 'a\x00b'}\n"),
        field="source",
    ),
    Case(
        "spec-node-id",
        WF + "CreateWorkflow",
        lambda c: _nul_node_id(),
        field="nodes[0].id",
    ),
    Case(
        "spec-pass-value",
        WF + "CreateWorkflow",
        _spec(_pass_spec("nul-value", NUL)),
        field="nodes[0].pass.value",
    ),
    Case(
        "execution-name",
        EX + "GetExecution",
        lambda c: es.GetExecutionRequest(name="executions/" + NUL),
        field="name",
    ),
    Case(
        "filter",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(filter=f'workflow = "{NUL}"'),
        field="filter",
    ),
]


def _described(spec: wf.WorkflowSpec, text: str) -> wf.WorkflowSpec:
    spec.description = text
    return spec


def _nul_node_id() -> ws.CreateWorkflowRequest:
    spec = _pass_spec("nul-id", 1)
    spec.nodes[0].id = NUL
    return ws.CreateWorkflowRequest(spec=spec)


@pytest.mark.parametrize("case", NUL_CASES, ids=lambda c: c.id)
def test_nul_characters(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- Huge names, filters, lists, fields ----------------------------------------------------------
def _needs(count: int) -> str:
    needs = ", ".join(f"n{i}" for i in range(count))
    return f"name: many-needs\nnodes:\n  - id: a\n    needs: [{needs}]\n    pass: {{value: 1}}\n"


def _bad_ids(count: int) -> str:
    nodes = "".join(f"  - id: Bad-{i}\n    pass: {{value: 1}}\n" for i in range(count))
    return f"name: many-bad-ids\nnodes:\n{nodes}"


HUGE_CASES = [
    Case(
        "execution-name-20000",
        EX + "GetExecution",
        lambda c: es.GetExecutionRequest(name="executions/" + "x" * 20_000),
        field="name",
        text="at most 256",
    ),
    Case(
        "workflow-name-20000",
        WF + "GetWorkflow",
        lambda c: ws.GetWorkflowRequest(name="workflows/" + "w" * 20_000),
        field="name",
    ),
    Case(
        "start-workflow-20000",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(workflow="w" * 20_000),
        field="workflow",
    ),
    Case(
        "request-id-10000",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(workflow="workflows/seed", request_id="r" * 10_000),
        field="request_id",
    ),
    Case("signal-10000", EX + "SignalExecution", _signal(signal="s" * 10_000), field="signal"),
    Case("event-10000", SM + "SendEvent", _event(event="E" * 10_000), field="event"),
    Case(
        "filter-5000-parens",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(filter="(" * 5000),
        field="filter",
    ),
    Case(
        "filter-1000-parens",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(filter="(" * 1000),
        field="filter",
    ),
    Case(
        "filter-500-clauses",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(filter=" AND ".join(["state = RUNNING"] * 500)),
        field="filter",
    ),
    Case(
        "instance-filter-5000-parens",
        SM + "ListInstances",
        lambda c: sms.ListInstancesRequest(filter="(" * 5000),
        field="filter",
    ),
    Case(
        "page-token-100000",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(page_token="t" * 100_000),
        field="page_token",
    ),
    Case(
        "needs-10000-unknown",
        WF + "CreateWorkflow",
        _source(_needs(10_000)),
        field="nodes[0].needs",
    ),
    Case(
        "validate-needs-10000-unknown",
        WF + "ValidateWorkflow",
        lambda c: ws.ValidateWorkflowRequest(source=_needs(10_000)),
        grpc.StatusCode.OK,
        response_has="nodes[0].needs[9999]",
    ),
    Case("bad-ids-3000", WF + "CreateWorkflow", _source(_bad_ids(3000)), field="nodes["),
    Case(
        "description-200000-is-fine",  # long text (prompts, descriptions) is no mistake
        WF + "CreateWorkflow",
        lambda c: ws.CreateWorkflowRequest(
            spec=_described(_pass_spec("long-text", 1), "d" * 200_000)
        ),
        grpc.StatusCode.OK,
    ),
    Case(
        "description-1100000",
        WF + "CreateWorkflow",
        lambda c: ws.CreateWorkflowRequest(
            spec=wf.WorkflowSpec(name="long-description", description="d" * 1_100_000)
        ),
        field="description",
    ),
    Case(
        "node-id-20000",
        WF + "CreateWorkflow",
        lambda c: ws.CreateWorkflowRequest(
            source="name: long-id\nnodes:\n  - id: " + "a" * 20_000 + "\n    pass: {value: 1}\n"
        ),
        field="nodes[0].id",
    ),
]


@pytest.mark.parametrize("case", HUGE_CASES, ids=lambda c: c.id)
def test_huge_values(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- Unknown references and wrong kinds ----------------------------------------------------------
NOT_FOUND = grpc.StatusCode.NOT_FOUND
REFERENCE_CASES = [
    Case(
        "get-execution",
        EX + "GetExecution",
        lambda c: es.GetExecutionRequest(name="executions/nope"),
        NOT_FOUND,
    ),
    Case("start-unknown-workflow", EX + "StartExecution", _start({}, "nope"), NOT_FOUND),
    Case(
        "signal-unknown-execution",
        EX + "SignalExecution",
        lambda c: es.SignalExecutionRequest(name="executions/nope", signal="go"),
        NOT_FOUND,
    ),
    Case(
        "events-unknown-execution",
        EX + "ListExecutionEvents",
        lambda c: es.ListExecutionEventsRequest(parent="executions/nope"),
        NOT_FOUND,
    ),
    Case(
        "trace-unknown-execution",
        EX + "GetExecutionTrace",
        lambda c: es.GetExecutionTraceRequest(name="executions/nope"),
        NOT_FOUND,
    ),
    Case(
        "watch-unknown-execution",
        EX + "WatchExecution",
        lambda c: es.WatchExecutionRequest(name="executions/nope"),
        NOT_FOUND,
        streaming=True,
    ),
    Case(
        "cancel-unknown-execution",
        EX + "CancelExecution",
        lambda c: es.CancelExecutionRequest(name="executions/nope"),
        NOT_FOUND,
    ),
    Case(
        "get-workflow-version",
        WF + "GetWorkflow",
        lambda c: ws.GetWorkflowRequest(name="workflows/seed", version=999),
        NOT_FOUND,
    ),
    Case(
        "event-unknown-instance",
        SM + "SendEvent",
        lambda c: sms.SendEventRequest(name="instances/nope", event="NEXT"),
        NOT_FOUND,
    ),
    Case(
        "rerun-unknown-node",
        EX + "RerunExecution",
        lambda c: es.RerunExecutionRequest(name=c.finished, from_node_id="nope"),
        field="from_node_id",
    ),
    Case("start-a-machine", EX + "StartExecution", _start({}, "light"), field="workflow"),
    Case(
        "instance-of-a-dag",
        SM + "CreateInstance",
        lambda c: sms.CreateInstanceRequest(workflow="workflows/seed"),
    ),
    Case("input-breaks-schema", EX + "StartExecution", _start({"n": "three"}), field="input"),
    Case(
        "negative-page-size",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(page_size=-1),
        field="page_size",
    ),
    Case(
        "foreign-page-token",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(page_token="bm90LWEtdG9rZW4"),
        field="page_token",
    ),
    Case(
        "negative-version",
        EX + "RerunExecution",
        lambda c: es.RerunExecutionRequest(name=c.finished, version=-1),
        field="version",
    ),
    Case(
        "resume-a-finished",
        EX + "ResumeExecution",
        lambda c: es.ResumeExecutionRequest(name=c.finished),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    Case("empty-name", EX + "GetExecution", lambda c: es.GetExecutionRequest(), field="name"),
]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: c.id)
def test_unknown_references(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)


# -- Nothing refused is stored ---------------------------------------------------------------------
def test_refused_values_leave_no_trace(ctx: Ctx) -> None:
    """A canary inside refused requests (NUL, NaN, a huge id) is stored nowhere: not in the
    database, nor in any execution's events. (An error may quote the caller's own value back.)"""
    canary = f"canary-{uuid.uuid4().hex}"
    h = ctx.h
    refused = [
        h.start("seed", {"n": 1, "k": canary + "\x00"}),
        h.start("seed", {"n": float("nan"), "k": canary}),
        h.call(EX + "SignalExecution", _signal({"k": canary, "x": float("inf")})(ctx)),
        h.call(SM + "SendEvent", _event({canary + "\x00": 1})(ctx)),
        h.call(
            EX + "StartExecution",
            es.StartExecutionRequest(workflow="workflows/seed", request_id=canary * 50),
        ),
    ]
    assert all(o.code == grpc.StatusCode.INVALID_ARGUMENT for o in refused), [
        str(o) for o in refused
    ]
    assert [hit for hit in h.scan(canary) if hit.startswith("database")] == []
    for name in [*h.stored, ctx.waiting]:
        assert canary.encode() not in b"".join(h.events(name).responses)


# -- Forged page tokens and boundary numbers -----------------------------------------------------
def _token(kind: str, after: Any, query: str = "") -> str:
    import base64
    import json

    raw = json.dumps({"k": kind, "a": after, "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_AFTER: dict[str, Any] = {
    "object": {"x": 1},
    "list": [1, 2],
    "string": "zzz",
    "negative": -5,
    "huge": 2**70,
    "float": 1.5,
    "null-byte": "a\x00b",
    "bool": True,
}


def _forged(kind: str, after: Any) -> list[Case]:
    return [
        Case(
            f"executions-{kind}",
            EX + "ListExecutions",
            lambda c: es.ListExecutionsRequest(page_token=_token("executions", after)),
            field="page_token",
        ),
        Case(
            f"events-{kind}",
            EX + "ListExecutionEvents",
            lambda c: es.ListExecutionEventsRequest(
                parent=c.finished, page_token=_token("events", after, c.finished.split("/")[-1])
            ),
            field="page_token",
        ),
        Case(
            f"workflows-{kind}",
            WF + "ListWorkflows",
            lambda c: ws.ListWorkflowsRequest(page_token=_token("workflows", after)),
            field="page_token",
        ),
        Case(
            f"instances-{kind}",
            SM + "ListInstances",
            lambda c: sms.ListInstancesRequest(page_token=_token("instances", after)),
            field="page_token",
        ),
        Case(
            f"history-{kind}",
            SM + "ListInstanceHistory",
            lambda c: sms.ListInstanceHistoryRequest(
                parent=c.instance, page_token=_token("history", after, c.instance.split("/")[-1])
            ),
            field="page_token",
        ),
    ]


FORGED_CASES = [case for kind, after in FORGED_AFTER.items() for case in _forged(kind, after)]


@pytest.mark.parametrize("case", FORGED_CASES, ids=lambda c: c.id)
def test_forged_page_tokens(ctx: Ctx, case: Case) -> None:
    """A token the server did not issue, holding a position of the wrong type or range: refused
    (or, where the position is merely past the end, an empty page), never a crash."""
    outcome = _send(ctx, case)
    assert outcome.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK), str(outcome)
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert outcome.fields == ["page_token"], str(outcome)


INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
BOUNDARY_CASES = [
    Case(
        "events-after-max",
        EX + "ListExecutionEvents",
        lambda c: es.ListExecutionEventsRequest(parent=c.finished, after_sequence=INT64_MAX),
        grpc.StatusCode.OK,
    ),
    Case(
        "events-after-negative",
        EX + "ListExecutionEvents",
        lambda c: es.ListExecutionEventsRequest(parent=c.finished, after_sequence=-(2**63)),
        field="after_sequence",
    ),
    Case(
        "watch-after-max",
        EX + "WatchExecution",
        lambda c: es.WatchExecutionRequest(name=c.finished, after_sequence=INT64_MAX),
        grpc.StatusCode.OK,
        streaming=True,
    ),
    Case(
        "watch-after-negative",
        EX + "WatchExecution",
        lambda c: es.WatchExecutionRequest(name=c.finished, after_sequence=-1),
        field="after_sequence",
        streaming=True,
    ),
    Case(
        "history-after-max",
        SM + "ListInstanceHistory",
        lambda c: sms.ListInstanceHistoryRequest(parent=c.instance, after_sequence=INT64_MAX),
        grpc.StatusCode.OK,
    ),
    Case(
        "page-size-max",
        EX + "ListExecutions",
        lambda c: es.ListExecutionsRequest(page_size=INT32_MAX),
        grpc.StatusCode.OK,
    ),
    Case(
        "workflow-version-max",
        WF + "GetWorkflow",
        lambda c: ws.GetWorkflowRequest(name="workflows/seed", version=INT32_MAX),
        NOT_FOUND,
    ),
    Case(
        "workflow-version-negative",
        WF + "GetWorkflow",
        lambda c: ws.GetWorkflowRequest(name="workflows/seed", version=-(2**31)),
        field="version",
    ),
    Case(
        "start-version-negative",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(workflow="workflows/seed", version=-1),
        field="version",
    ),
    Case(
        "start-version-max",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(workflow="workflows/seed", version=INT32_MAX),
        NOT_FOUND,
    ),
    Case(
        "start-priority-extremes",
        EX + "StartExecution",
        lambda c: es.StartExecutionRequest(
            workflow="workflows/seed", priority=-(2**31), input=to_value({"n": 1})
        ),
        grpc.StatusCode.OK,
    ),
    Case(
        "input-number-1e308",
        EX + "StartExecution",
        _start({"n": 1, "big": 1e308, "tiny": 5e-324, "neg0": -0.0}),
        grpc.StatusCode.OK,
    ),
    Case(
        "input-integer-past-2-53",
        EX + "StartExecution",
        _start({"n": 2**60}),  # a double on the wire: stays one
        grpc.StatusCode.OK,
    ),
    Case(
        "instance-watch-after-max",
        SM + "WatchInstance",
        lambda c: sms.WatchInstanceRequest(name=c.instance, after_sequence=INT64_MAX),
        grpc.StatusCode.OK,
        streaming=True,
    ),
    Case(
        "instance-watch-after-negative",
        SM + "WatchInstance",
        lambda c: sms.WatchInstanceRequest(name=c.instance, after_sequence=-1),
        field="after_sequence",
        streaming=True,
    ),
]


@pytest.mark.parametrize("case", BOUNDARY_CASES, ids=lambda c: c.id)
def test_boundary_numbers(ctx: Ctx, case: Case) -> None:
    _check(ctx, case)
