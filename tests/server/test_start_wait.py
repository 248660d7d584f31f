"""StartExecution with `wait`: the final execution when it ends within `wait_timeout`, else
the running one (which goes on); a bad `wait_timeout` is INVALID_ARGUMENT naming the field,
and starts nothing."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from agentrun.client import AsyncClient, ExecutionState
from agentrun.client import errors as e
from agentrun.v1 import execution_pb2 as ex
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc

pytestmark = pytest.mark.timeout(30)

SHORT = """
name: short
nodes:
  - {id: nap, tool: {name: core.sleep, args: {seconds: 0.2}}}
  - {id: done, needs: [nap], pass: {value: "${{ input.x + 1 }}"}}
output: "${{ nodes.done.output }}"
"""

FAILS = """
name: fails
nodes:
  - {id: boom, tool: {name: core.fail, args: {message: no luck}}}
"""

GATED = """
name: gated
nodes:
  - {id: approve, wait: {signal: go}}
  - {id: after, needs: [approve], pass: {value: 7}}
output: "${{ nodes.after.output }}"
"""


async def test_a_short_workflow_answers_with_its_output(client: AsyncClient) -> None:
    await client.create_workflow(source=SHORT)
    done = await client.start_execution("short", {"x": 1}, wait=True, wait_timeout=10)
    assert done.state is ExecutionState.SUCCEEDED
    assert done.output == 2
    # The default wait (30 s) covers it too.
    again = await client.start_execution("short", {"x": 2}, wait=True)
    assert (again.state, again.output) == (ExecutionState.SUCCEEDED, 3)


async def test_a_failed_workflow_answers_with_its_error(client: AsyncClient) -> None:
    await client.create_workflow(source=FAILS)
    done = await client.start_execution("fails", {}, wait=True, wait_timeout=10)
    assert done.state is ExecutionState.FAILED
    assert done.error is not None and "no luck" in done.error.message


async def test_past_the_deadline_the_running_execution_is_returned_and_goes_on(
    client: AsyncClient,
) -> None:
    await client.create_workflow(source=GATED)
    running = await client.start_execution("gated", {}, wait=True, wait_timeout=0.3)
    assert not running.state.terminal
    assert running.state is ExecutionState.WAITING
    await client.signal_execution(running.id, "go", {})
    final = await client.wait(running, timeout=10)
    assert (final.state, final.output) == (ExecutionState.SUCCEEDED, 7)


async def test_the_calls_own_deadline_bounds_the_wait(server: object, client: AsyncClient) -> None:
    """A client deadline shorter than `wait_timeout` gets the running execution before it,
    not DEADLINE_EXCEEDED (which would lose the execution's id)."""
    await client.create_workflow(source=GATED)
    stub = es_grpc.ExecutionServiceStub(client.channel)
    request = es.StartExecutionRequest(
        workflow="workflows/gated", wait=True, wait_timeout=Duration(seconds=60)
    )
    response = await stub.StartExecution(request, timeout=3.0)
    assert response.execution.state == ex.Execution.STATE_WAITING


@pytest.mark.parametrize(
    ("wait", "timeout", "says"),
    [
        (True, Duration(seconds=-1), "more than 0s"),
        (True, Duration(seconds=0), "more than 0s"),
        (True, Duration(seconds=301), "at most 300s"),
        (False, Duration(seconds=5), "only with `wait: true`"),
        (True, Duration(seconds=1, nanos=-5), "same sign"),
    ],
)
async def test_a_bad_wait_timeout_names_the_field_and_starts_nothing(
    client: AsyncClient, wait: bool, timeout: Duration, says: str
) -> None:
    await client.create_workflow(source=GATED)
    stub = es_grpc.ExecutionServiceStub(client.channel)
    request = es.StartExecutionRequest(workflow="workflows/gated", wait=wait, wait_timeout=timeout)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartExecution(request)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "wait_timeout" in (refused.value.details() or "")
    assert says in (refused.value.details() or "")
    assert [x async for x in client.list_executions()] == []


async def test_the_sdk_refuses_the_same(client: AsyncClient) -> None:
    await client.create_workflow(source=GATED)
    with pytest.raises(e.InvalidArgument) as refused:
        await client.start_execution("gated", {}, wait=True, wait_timeout=600)
    assert "wait_timeout" in str(refused.value)
