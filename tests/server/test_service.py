"""The services through the SDK against an in-process server on port 0."""

from __future__ import annotations

import pytest

from agentrun.client import AsyncClient, ExecutionState
from agentrun.client import errors as e
from agentrun.v1 import workflow_pb2
from tests.server.conftest import ECHO_CHAIN

pytestmark = pytest.mark.timeout(30)


async def test_workflow_crud(client: AsyncClient) -> None:
    created = await client.create_workflow(source=ECHO_CHAIN.format(name="chain"))
    assert (created.name, created.version) == ("chain", 1)
    assert [n["id"] for n in created.spec["nodes"]] == ["a", "b"]
    again = await client.create_workflow(source=ECHO_CHAIN.format(name="chain"))
    assert again.version == 2
    assert (await client.get_workflow("chain", version=1)).version == 1
    assert (await client.get_workflow("workflows/chain")).version == 2
    for n in range(5):
        await client.create_workflow(source=ECHO_CHAIN.format(name=f"w{n}"))
    names = [w.name async for w in client.list_workflows(page_size=2)]
    assert names == ["chain", "w0", "w1", "w2", "w3", "w4"]
    updated = await client.update_workflow("w0", source=ECHO_CHAIN.format(name="w0"))
    assert updated.version == 2
    await client.delete_workflow("w0")
    with pytest.raises(e.WorkflowNotFound):
        await client.get_workflow("w0")


async def test_typed_spec(client: AsyncClient) -> None:
    spec = workflow_pb2.WorkflowSpec(name="typed")
    node = spec.nodes.add(id="only")
    node.pass_node.value.number_value = 3
    created = await client.create_workflow(spec)
    assert created.spec["nodes"][0]["pass"]["value"] == 3  # an int again, not 3.0
    execution = await client.start_execution("typed", {"n": 1})
    done = await client.wait(execution, timeout=10)
    assert done.state is ExecutionState.SUCCEEDED


async def test_validate(client: AsyncClient) -> None:
    ok = await client.validate_workflow(source=ECHO_CHAIN.format(name="v"))
    assert ok.valid and ok.stages == [["a"], ["b"]]
    bad = await client.validate_workflow(
        {"name": "v", "nodes": [{"id": "a", "needs": ["zz"], "pass": {}}]}
    )
    assert not bad.valid
    assert any(d.field.startswith("nodes[0]") for d in bad.errors)


async def test_start_watch_and_events(client: AsyncClient) -> None:
    await client.create_workflow(source=ECHO_CHAIN.format(name="chain"))
    execution = await client.start_execution("chain", {"x": 1}, request_id="r1")
    assert execution.workflow == "chain"
    same = await client.start_execution("chain", {"x": 1}, request_id="r1")
    assert same.id == execution.id
    events = [ev async for ev in client.watch(execution)]
    assert [ev.sequence for ev in events] == list(range(1, len(events) + 1))
    assert events[-1].terminal and events[-1].type == "execution.succeeded"
    listed = [ev async for ev in client.list_execution_events(execution.id, page_size=2)]
    assert [ev.sequence for ev in listed] == [ev.sequence for ev in events]
    tail = [ev async for ev in client.watch(execution, after_sequence=events[-2].sequence)]
    assert [ev.sequence for ev in tail] == [events[-1].sequence]
    done = await client.get_execution(execution.id, include_nodes=True)
    assert done.state is ExecutionState.SUCCEEDED
    listed_executions = [
        x async for x in client.list_executions(workflow="chain", states=["SUCCEEDED"])
    ]
    assert [x.id for x in listed_executions] == [execution.id]


async def test_list_tools_pages_and_filters(client: AsyncClient) -> None:
    """ListTools: schemas as Structs, effects, prefix filter, paging (raw stub)."""
    from agentrun.v1 import workflow_service_pb2 as pb

    stub = client.workflow_service
    everything = await stub.ListTools(pb.ListToolsRequest(page_size=1000))
    names = [t.name for t in everything.tools]
    assert names == sorted(names) and {"core.echo", "core.sleep", "core.fail"} <= set(names)
    sleep = next(t for t in everything.tools if t.name == "core.sleep")
    assert sleep.args_schema["required"] == ["seconds"]
    assert sleep.effect == pb.Tool.EFFECT_IDEMPOTENT
    core = await stub.ListTools(pb.ListToolsRequest(filter="core.", page_size=2))
    assert [t.name for t in core.tools] == ["core.echo", "core.fail"] and core.next_page_token
    rest = await stub.ListTools(
        pb.ListToolsRequest(filter="core.", page_size=2, page_token=core.next_page_token)
    )
    assert [t.name for t in rest.tools] == ["core.sleep"] and not rest.next_page_token
