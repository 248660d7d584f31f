"""Every RPC answers the same over gRPC and over Connect JSON.

Two servers, each with a fresh engine and store, run the same script of calls: one all over
gRPC, the other all over Connect JSON. Every answer, success or failure, is compared as JSON:
responses field by field, failures by status code, message and each google.rpc detail. Ids,
times and durations, which differ between any two runs, are replaced by placeholders in the
order they first appear. The script must call every method of every service the HTTP port
serves, so a new RPC cannot go untested here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from tests.http.conftest import APPROVAL, ORDER, Served, _serve
from tests.http.transports import ConnectTransport, Failure, GrpcTransport, Result
from tests.server.conftest import ECHO_CHAIN

pytestmark = pytest.mark.timeout(120)

WS = "/agentrun.v1.WorkflowService/"
ES = "/agentrun.v1.ExecutionService/"
SM = "/agentrun.v1.StateMachineService/"


class Recorder:
    """Runs the script's calls on one transport and keeps every answer, in order."""

    def __init__(self, transport: Any) -> None:
        self.t = transport
        self.answers: list[tuple[str, Result]] = []
        self.methods: set[str] = set()

    async def call(self, path: str, request: dict[str, Any]) -> Any:
        answer = await self.t.call(path, request)
        self.methods.add(path)
        self.answers.append((path, answer))
        return answer

    async def stream(self, path: str, request: dict[str, Any], limit: int = 0) -> Any:
        answer = await self.t.stream(path, request, limit)
        self.methods.add(path)
        self.answers.append((path, answer))
        return answer

    async def until(self, name: str, *states: str) -> None:
        """Polls GetExecution (unrecorded) until the execution is in one of `states`."""
        for _ in range(2000):
            got = await self.t.call(ES + "GetExecution", {"name": name})
            assert not isinstance(got, Failure), got
            if got["execution"]["state"] in states:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{name} never reached {states}")


async def script(r: Recorder) -> None:
    # WorkflowService
    for source in (ECHO_CHAIN.format(name="chain"), APPROVAL, ORDER):
        await r.call(WS + "CreateWorkflow", {"source": source})
    await r.call(WS + "CreateWorkflow", {"source": "name: bad\nnodes: [{id: a, needs: [zz]}]"})
    await r.call(WS + "CreateWorkflow", {})
    await r.call(WS + "GetWorkflow", {"name": "workflows/chain"})
    await r.call(WS + "GetWorkflow", {"name": "nope"})
    await r.call(WS + "GetWorkflow", {"name": "bad/name/x"})
    for name in ("chain", "ghost"):
        update = {"name": name, "source": ECHO_CHAIN.format(name=name)}
        await r.call(WS + "UpdateWorkflow", update)
    first = await r.call(WS + "ListWorkflows", {"pageSize": 2})
    if not isinstance(first, Failure) and first.get("nextPageToken"):
        await r.call(WS + "ListWorkflows", {"pageSize": 2, "pageToken": first["nextPageToken"]})
    await r.call(WS + "ListWorkflows", {"pageSize": -1})
    await r.call(WS + "ListWorkflows", {"pageToken": "garbage"})
    await r.call(WS + "ValidateWorkflow", {"source": APPROVAL})
    await r.call(WS + "ValidateWorkflow", {"source": "name: v\nnodes: [{id: a, needs: [b]}]"})
    await r.call(WS + "ListTools", {"filter": "core."})

    # ExecutionService: a run to its end, its log, stream and trace
    start = {"workflow": "chain", "input": {"x": 1}, "requestId": "r1"}
    chain = (await r.call(ES + "StartExecution", start))["execution"]["name"]
    await r.call(ES + "StartExecution", start)  # the same execution
    await r.call(ES + "StartExecution", {**start, "input": {"x": 2}})  # ALREADY_EXISTS
    await r.call(ES + "StartExecution", {"workflow": "approval", "input": {"n": "one"}})
    await r.call(ES + "StartExecution", {"workflow": "missing"})
    await r.until(chain, "STATE_SUCCEEDED")
    await r.call(ES + "GetExecution", {"name": chain, "includeNodes": True})
    await r.call(ES + "ListExecutionEvents", {"parent": chain, "pageSize": 3})
    await r.call(ES + "ListExecutionEvents", {"parent": chain, "afterSequence": 4})
    await r.stream(ES + "WatchExecution", {"name": chain})
    await r.stream(ES + "WatchExecution", {"name": chain, "afterSequence": 5})
    await r.stream(ES + "WatchExecution", {"name": "executions/nope"})
    await r.stream(ES + "WatchExecution", {"name": chain, "afterSequence": -1})
    await r.call(ES + "GetExecutionTrace", {"name": chain})
    await r.call(ES + "PauseExecution", {"name": chain})  # finished: FAILED_PRECONDITION

    # A human step: pause, resume, signal, rerun; another one cancelled
    waiting = await r.call(ES + "StartExecution", {"workflow": "approval", "input": {"n": 1}})
    approval = waiting["execution"]["name"]
    await r.until(approval, "STATE_WAITING")
    await r.call(ES + "PauseExecution", {"name": approval})
    await r.until(approval, "STATE_PAUSED")
    await r.call(ES + "ResumeExecution", {"name": approval})
    await r.until(approval, "STATE_WAITING")
    signal = {"name": approval, "signal": "approve", "data": {"by": "a"}, "signalId": "s1"}
    await r.call(ES + "SignalExecution", signal)
    await r.until(approval, "STATE_SUCCEEDED")
    await r.call(ES + "SignalExecution", {"name": approval, "signal": "approve", "signalId": "s2"})
    await r.call(ES + "GetExecution", {"name": approval, "includeNodes": True})
    rerun = await r.call(ES + "RerunExecution", {"name": approval, "fromNodeId": "done"})
    await r.until(rerun["execution"]["name"], "STATE_SUCCEEDED")
    await r.call(ES + "GetExecution", {"name": rerun["execution"]["name"]})
    await r.call(ES + "RerunExecution", {"name": approval, "fromNodeId": "nope"})
    # Approvals: the pending wait listed, answered once by its id; a replay is refused
    asked = (await r.call(ES + "StartExecution", {"workflow": "approval", "input": {"n": 3}}))[
        "execution"
    ]["name"]
    await r.until(asked, "STATE_WAITING")
    waits = await r.call(ES + "ListWaits", {"parent": asked})
    await r.call(ES + "ListWaits", {"pageSize": 1})
    await r.call(ES + "ListWaits", {"pageToken": "garbage"})
    answer = {"waitId": waits["waits"][0]["waitId"], "data": {"by": "b"}}
    await r.call(ES + "AnswerWait", answer)
    await r.call(ES + "AnswerWait", answer)  # FAILED_PRECONDITION: answered already
    await r.call(ES + "AnswerWait", {"waitId": "nope"})
    await r.call(ES + "AnswerWait", {"data": 1})
    doomed = await r.call(ES + "StartExecution", {"workflow": "approval", "input": {"n": 2}})
    await r.until(doomed["execution"]["name"], "STATE_WAITING")
    await r.call(ES + "CancelExecution", {"name": doomed["execution"]["name"]})
    await r.until(doomed["execution"]["name"], "STATE_CANCELLED")
    await r.call(ES + "ResumeExecution", {"name": doomed["execution"]["name"]})
    await r.call(
        ES + "ControlExecutions",
        {"action": "ACTION_PAUSE", "filter": 'workflow = "approval" AND state = WAITING'},
    )
    await r.call(
        ES + "ControlExecutions", {"action": "ACTION_CANCEL"}
    )  # INVALID_ARGUMENT: no filter
    await r.call(ES + "ListExecutions", {"filter": 'workflow = "approval"'})
    await r.call(ES + "ListExecutions", {"filter": "state IN (SUCCEEDED)", "pageSize": 2})
    await r.call(ES + "ListExecutions", {"filter": "colour = blue"})

    # StateMachineService
    created = await r.call(SM + "CreateInstance", {"workflow": "order", "requestId": "o1"})
    order = created["instance"]["name"]
    await r.call(SM + "CreateInstance", {"workflow": "chain"})
    await r.call(SM + "GetAvailableEvents", {"name": order})
    await r.call(SM + "SendEvent", {"name": order, "event": "SHIP"})
    pay = {"name": order, "event": "PAY", "data": {"amount": 5}, "eventId": "e1"}
    await r.call(SM + "SendEvent", pay)
    await r.call(SM + "SendEvent", pay)  # the same event id: applied once
    await r.call(SM + "SendEvent", {"name": order, "event": "SHIP"})
    await r.call(SM + "GetInstance", {"name": order})
    await r.call(SM + "GetInstance", {"name": "instances/nope"})
    await r.call(SM + "ListInstanceHistory", {"parent": order})
    await r.stream(SM + "WatchInstance", {"name": order})
    other = await r.call(SM + "CreateInstance", {"workflow": "order"})
    await r.call(SM + "CancelInstance", {"name": other["instance"]["name"], "reason": "test"})
    await r.call(SM + "ListInstances", {})

    await r.call(WS + "DeleteWorkflow", {"name": "chain"})
    await r.call(WS + "DeleteWorkflow", {"name": "chain"})
    await r.call("/grpc.health.v1.Health/Check", {})
    await r.call("/grpc.health.v1.Health/Check", {"service": "nope"})
    await r.call("/grpc.health.v1.Health/List", {})
    await r.stream("/grpc.health.v1.Health/Watch", {"service": ""}, limit=1)  # endless


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_DURATION = re.compile(r"^-?\d+(\.\d+)?s$")
_ID = re.compile(r"\b[0-9a-f]{24,32}\b")


class Normalizer:
    """Replaces what differs between any two runs by placeholders (ids in order of first
    appearance, so two ids that differ stay different)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, Failure):
            return Failure(value.code, self(value.message), self(value.details))
        if isinstance(value, dict):
            return {k: self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if isinstance(value, str):
            if key == "nextPageToken" and value:
                return "<token>"
            if _DURATION.match(value):
                return "<duration>"
            value = _TIME.sub("<time>", value)
            return _ID.sub(lambda m: self.ids.setdefault(m[0], f"<id{len(self.ids)}>"), value)
        if isinstance(value, float) and key.endswith(("Ms", "Seconds", "ms", "seconds")):
            return "<number>"
        return value


@pytest.fixture
async def twins() -> AsyncIterator[tuple[Served, Served]]:
    async for a in _serve():
        async for b in _serve():
            yield a, b


async def test_every_rpc_answers_the_same(twins: tuple[Served, Served]) -> None:
    a, b = twins
    async with (
        grpc.aio.insecure_channel(a.grpc_target) as channel,
        httpx.AsyncClient(base_url=b.url, timeout=30) as client,
    ):
        over_grpc = Recorder(GrpcTransport(channel))
        over_http = Recorder(ConnectTransport(client))
        await script(over_grpc)
        await script(over_http)

    served = set(b.http.app.rpc_paths)
    assert served - over_http.methods == set(), "methods the parity script does not call"
    norm_grpc, norm_http = Normalizer(), Normalizer()
    assert len(over_grpc.answers) == len(over_http.answers)
    for (path, grpc_answer), (_, http_answer) in zip(over_grpc.answers, over_http.answers):
        assert norm_http(http_answer) == norm_grpc(grpc_answer), path
    failures = [a for _, a in over_grpc.answers if isinstance(a, Failure)]
    codes = {f.code for f in failures}
    # The script reaches the error paths it means to (so they are compared too).
    assert {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "ALREADY_EXISTS"} <= codes
