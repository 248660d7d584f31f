"""Idempotent retries stay idempotent after the end (issue 12, item 3), over gRPC.

A client whose first call's answer was lost retries it; the retry must answer as the first call
did even when that call ended the execution or instance (a signal that let it finish, an event
into a final state). The same id with other content stays ALREADY_EXISTS, as for request ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from agentrun.server import AgentrunServer, ServerConfig
from agentrun.v1 import execution_pb2, state_machine_pb2
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import state_machine_service_pb2 as sms
from agentrun.v1 import state_machine_service_pb2_grpc as sms_grpc
from agentrun.v1 import workflow_service_pb2 as ws
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc
from tests.server.conftest import STOP_GRACE

pytestmark = pytest.mark.timeout(60)

GATE = """
name: gate
nodes:
  - {id: w, wait: {signal: go}}
  - {id: after, needs: [w], pass: {value: "${{ nodes.w.output }}"}}
"""
DOOR = """
name: door
mode: state_machine
initial: shut
states: {shut: {on: {OPEN: ajar}}, ajar: {on: {BREAK: broken}}, broken: {final: true}}
"""


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


@pytest.fixture(params=["memory", "sqlite"])
async def channel(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[grpc.aio.Channel]:
    from agentrun.engine import Engine
    from agentrun.engine.machine import MachineEngine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.factory import open_store

    url = "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 'agentrun.db'}"
    store = await open_store(url)
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    machines = MachineEngine(engine)
    await engine.start()
    await machines.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(STOP_GRACE)
        await engine.stop(grace=0)
        await machines.stop()
        await store.close()


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_a_signal_retried_after_it_finished_the_execution(channel: grpc.aio.Channel) -> None:
    await ws_grpc.WorkflowServiceStub(channel).CreateWorkflow(ws.CreateWorkflowRequest(source=GATE))
    executions = es_grpc.ExecutionServiceStub(channel)
    started = await executions.StartExecution(es.StartExecutionRequest(workflow="gate"))
    name = started.execution.name
    while (await executions.GetExecution(es.GetExecutionRequest(name=name))).execution.state != (
        execution_pb2.Execution.STATE_WAITING
    ):
        await asyncio.sleep(0.02)
    send = es.SignalExecutionRequest(name=name, signal="go", data=value({"ok": 1}), signal_id="s-1")
    first = await executions.SignalExecution(send)
    assert first.execution.name == name
    while (await executions.GetExecution(es.GetExecutionRequest(name=name))).execution.state != (
        execution_pb2.Execution.STATE_SUCCEEDED
    ):
        await asyncio.sleep(0.02)

    again = await executions.SignalExecution(send)  # the retry of a call whose answer was lost
    assert again.execution.name == name
    assert again.execution.state == execution_pb2.Execution.STATE_SUCCEEDED
    # Another payload under the same id is a different request: ALREADY_EXISTS, as for a
    # StartExecution request id; a new id on a finished execution is refused as before.
    other = es.SignalExecutionRequest(
        name=name, signal="go", data=value({"ok": 2}), signal_id="s-1"
    )
    assert await code_of(executions.SignalExecution(other)) == grpc.StatusCode.ALREADY_EXISTS
    renamed = es.SignalExecutionRequest(
        name=name, signal="stop", data=value({"ok": 1}), signal_id="s-1"
    )
    assert await code_of(executions.SignalExecution(renamed)) == grpc.StatusCode.ALREADY_EXISTS
    fresh = es.SignalExecutionRequest(
        name=name, signal="go", data=value({"ok": 1}), signal_id="s-2"
    )
    assert await code_of(executions.SignalExecution(fresh)) == grpc.StatusCode.FAILED_PRECONDITION
    events = await executions.ListExecutionEvents(
        es.ListExecutionEventsRequest(parent=name, page_size=100)
    )
    assert [e.type for e in events.events].count("signal.received") == 1


async def test_request_ids_after_the_end(channel: grpc.aio.Channel) -> None:
    workflows = ws_grpc.WorkflowServiceStub(channel)
    executions = es_grpc.ExecutionServiceStub(channel)
    create = ws.CreateWorkflowRequest(source=GATE, request_id="wf-1")
    first_wf = await workflows.CreateWorkflow(create)
    assert (await workflows.CreateWorkflow(create)).workflow.version == first_wf.workflow.version
    start = es.StartExecutionRequest(workflow="gate", request_id="run-1")
    started = await executions.StartExecution(start)
    name = started.execution.name
    await executions.CancelExecution(es.CancelExecutionRequest(name=name))
    again = await executions.StartExecution(start)
    assert again.execution.name == name
    other = es.StartExecutionRequest(workflow="gate", request_id="run-1", input=value({"x": 1}))
    assert await code_of(executions.StartExecution(other)) == grpc.StatusCode.ALREADY_EXISTS
    rerun = es.RerunExecutionRequest(name=name, from_node_id="w", request_id="rerun-1")
    first = await executions.RerunExecution(rerun)
    await executions.CancelExecution(es.CancelExecutionRequest(name=first.execution.name))
    assert (await executions.RerunExecution(rerun)).execution.name == first.execution.name


async def test_an_event_retried_after_it_ended_the_instance(channel: grpc.aio.Channel) -> None:
    await ws_grpc.WorkflowServiceStub(channel).CreateWorkflow(ws.CreateWorkflowRequest(source=DOOR))
    machines = sms_grpc.StateMachineServiceStub(channel)
    create = sms.CreateInstanceRequest(workflow="door", request_id="door-1")
    instance = (await machines.CreateInstance(create)).instance
    await machines.SendEvent(sms.SendEventRequest(name=instance.name, event="OPEN", event_id="e-1"))
    send = sms.SendEventRequest(
        name=instance.name, event="BREAK", data=value({"why": "wind"}), event_id="e-2"
    )
    first = await machines.SendEvent(send)
    assert first.instance.state == state_machine_pb2.StateMachineInstance.STATE_COMPLETED
    again = await machines.SendEvent(send)
    assert (again.instance.state, again.instance.current_state) == (
        first.instance.state,
        first.instance.current_state,
    )
    assert (
        await machines.SendEvent(
            sms.SendEventRequest(name=instance.name, event="OPEN", event_id="e-1")
        )
    ).instance.state == state_machine_pb2.StateMachineInstance.STATE_COMPLETED
    other = sms.SendEventRequest(
        name=instance.name, event="BREAK", data=value({"why": "rain"}), event_id="e-2"
    )
    assert await code_of(machines.SendEvent(other)) == grpc.StatusCode.ALREADY_EXISTS
    fresh = sms.SendEventRequest(name=instance.name, event="OPEN", event_id="e-3")
    assert await code_of(machines.SendEvent(fresh)) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await machines.CreateInstance(create)).instance.name == instance.name
