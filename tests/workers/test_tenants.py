"""Workers serve their API key's tenant: calls go only to workers of the execution's
tenant, and a tool name belongs to the tenant whose workers declared it first."""

from __future__ import annotations

import asyncio

import pytest

from agentrun.client import AsyncClient, ExecutionState
from agentrun.server import ServerConfig
from agentrun.server.auth import ApiKey
from agentrun.worker import WorkerRefused

from .conftest import Served

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig.load(
        env={}, api_keys=[ApiKey("key-a", "acme", name="a"), ApiKey("key-g", "globex", name="g")]
    )


async def test_calls_reach_only_the_workers_of_the_executions_tenant(served: Served) -> None:
    acme = served.worker(api_key="key-a")
    acme.tool("crm.lookup")(lambda args: {"tenant": "acme"})
    task = asyncio.ensure_future(acme.run())
    await asyncio.wait_for(acme.connected.wait(), 10)
    source = "name: look\nnodes:\n  - {id: l, timeout: 1s, tool: {name: crm.lookup}}\n"
    async with (
        AsyncClient(served.address, api_key="key-a") as a,
        AsyncClient(served.address, api_key="key-g") as g,
    ):
        await a.create_workflow(source=source)
        await g.create_workflow(source=source)  # the name is known to every tenant's workflows
        mine = await a.wait(await a.start_execution("look", {}), timeout=20)
        assert mine.state is ExecutionState.SUCCEEDED and mine.output == {"l": {"tenant": "acme"}}
        theirs = await g.wait(await g.start_execution("look", {}), timeout=20)
        # No globex worker serves it: the call waited until the node's timeout.
        assert theirs.state is ExecutionState.FAILED and theirs.error is not None
        assert theirs.error.type == "timeout"
    assert acme.stats.calls == 1
    acme.stop()
    await task


async def test_another_tenants_workers_may_not_take_a_tool_name(served: Served) -> None:
    acme = served.worker(api_key="key-a")
    acme.tool("crm.owned")(lambda args: args)
    task = asyncio.ensure_future(acme.run())
    await asyncio.wait_for(acme.connected.wait(), 10)
    globex = served.worker(api_key="key-g")
    globex.tool("crm.owned")(lambda args: args)
    with pytest.raises(WorkerRefused) as caught:
        await asyncio.wait_for(globex.run(), 10)
    assert (
        "register.tools[0].name" in caught.value.details
        and "another tenant" in caught.value.details
    )
    acme.stop()
    await task


async def test_a_worker_without_a_key_is_unauthenticated(served: Served) -> None:
    anonymous = served.worker(api_key="")
    anonymous.tool("crm.any")(lambda args: args)
    with pytest.raises(WorkerRefused) as caught:
        await asyncio.wait_for(anonymous.run(), 10)
    assert caught.value.code.name == "UNAUTHENTICATED"
