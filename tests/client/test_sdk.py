"""The SDK: same methods on Client and AsyncClient, typed results, errors by reason,
control calls against an in-process server."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import grpc
import pytest
from grpc_status import rpc_status

from agentrun.client import AsyncClient, Client, ExecutionState, errors
from agentrun.client import _convert as c
from agentrun.server import AgentrunServer
from agentrun.server.errors import CODES, ApiError, to_status
from tests.server.conftest import ECHO_CHAIN, STOP_GRACE

pytestmark = pytest.mark.timeout(30)

HOLD = "name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n  - id: after\n    needs: [w]\n    pass: {value: '${{ nodes.w.output.x }}'}\n"


def _public(cls: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(cls, callable) if not n.startswith("_")}


def test_client_and_async_client_have_the_same_methods() -> None:
    assert _public(Client) == _public(AsyncClient)
    for name in _public(Client):
        sync_params = list(inspect.signature(getattr(Client, name)).parameters)
        async_params = list(inspect.signature(getattr(AsyncClient, name)).parameters)
        assert sync_params == async_params, name


class _FakeError(grpc.RpcError):
    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple:
        return self._status.trailing_metadata


@pytest.mark.parametrize("reason", sorted(CODES))
def test_every_reason_maps_to_its_class(reason: str) -> None:
    status = rpc_status.to_status(to_status(ApiError(reason, "boom", thing="x")))
    error = errors.from_rpc_error(_FakeError(status))
    assert error.reason == reason
    assert error.code == CODES[reason]
    assert type(error) is errors.BY_REASON[reason]
    assert isinstance(error, errors.BY_CODE[CODES[reason]])
    assert error.metadata == {"thing": "x"}


def test_an_error_without_details_maps_by_code() -> None:
    status = grpc.Status()
    status.code, status.details, status.trailing_metadata = grpc.StatusCode.NOT_FOUND, "gone", ()
    error = errors.from_rpc_error(_FakeError(status))
    assert type(error) is errors.NotFound and error.reason == ""


def test_values_keep_ints() -> None:
    value = c.to_value({"n": 3, "f": 1.5, "l": [1, None, True, "s"], "o": {}})
    assert c.from_value(value) == {"n": 3, "f": 1.5, "l": [1, None, True, "s"], "o": {}}
    assert isinstance(c.from_value(value)["n"], int)


async def test_control_calls(client: AsyncClient) -> None:
    await client.create_workflow(source=HOLD)
    execution = await client.start_execution("hold", {})
    async for event in client.watch(execution):
        if event.type == "node.waiting":
            break
    paused = await client.pause_execution(execution)
    assert paused.state is ExecutionState.PAUSED
    with pytest.raises(errors.IllegalTransition) as caught:
        await client.pause_execution(execution)
    assert caught.value.current_state == "PAUSED"
    resumed = await client.resume_execution(execution)
    assert resumed.state in (ExecutionState.RUNNING, ExecutionState.WAITING)
    await client.signal_execution(execution, "go", {"x": 7})
    done = await client.wait(execution, timeout=10)
    assert done.state is ExecutionState.SUCCEEDED
    full = await client.get_execution(execution, include_nodes=True)
    assert {n.node_id: n.output for n in full.nodes}["after"] == 7
    other = await client.start_execution("hold", {})
    cancelled = await client.cancel_execution(other.id)
    assert cancelled.state is ExecutionState.CANCELLED


async def test_paging_and_filters(client: AsyncClient) -> None:
    await client.create_workflow(source=ECHO_CHAIN.format(name="chain"))
    await client.create_workflow(source=HOLD)
    ids = [(await client.start_execution("chain", {"i": i})).id for i in range(5)]
    held = await client.start_execution("hold", {})
    for ident in ids:
        await client.wait(ident, timeout=10)
    everything = [x.id async for x in client.list_executions(page_size=2)]
    assert everything == sorted([*ids, held.id])
    chains = [x.id async for x in client.list_executions(workflow="chain", page_size=2)]
    assert chains == sorted(ids)
    waiting = [
        x.id async for x in client.list_executions(states=[ExecutionState.WAITING, "RUNNING"])
    ]
    assert waiting == [held.id]
    with pytest.raises(errors.InvalidArgument):
        async for _ in client.list_executions(filter="colour = red"):
            pass


def test_sync_client_against_a_server_in_a_thread() -> None:
    """The blocking Client, with the server's event loop in another thread."""
    from tests.server.conftest import make_engine

    ready = threading.Event()
    box: dict = {}

    def serve() -> None:
        async def main() -> None:
            engine = await make_engine()
            server = AgentrunServer(engine)
            box["port"] = await server.start("127.0.0.1:0")
            box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["stop"].wait()
            await server.stop(STOP_GRACE)
            await engine.stop(grace=0)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with Client(f"127.0.0.1:{box['port']}") as client:
            client.create_workflow(source=ECHO_CHAIN.format(name="sync"))
            assert [w.name for w in client.list_workflows()] == ["sync"]
            execution = client.start_execution("sync", {"a": 1})
            events = list(client.watch(execution))
            assert events[-1].terminal
            assert [e.sequence for e in client.list_execution_events(execution)] == [
                e.sequence for e in events
            ]
            assert client.get_execution(execution).state is ExecutionState.SUCCEEDED
            result = client.validate_workflow(source="name: x\nnodes: []\n")
            assert isinstance(result.valid, bool)
            with pytest.raises(errors.WorkflowNotFound):
                client.get_workflow("nope")
            # Bulk control and a resume, blocking.
            client.create_workflow(source=HOLD)
            held = [client.start_execution("hold", {}).id for _ in range(3)]
            for ident in held:
                while client.get_execution(ident).state is not ExecutionState.WAITING:
                    time.sleep(0.02)
            paused = list(client.control_executions("pause", workflow="hold", page_size=2))
            assert sorted(o.execution_id for o in paused) == sorted(held)
            assert all(o.done and o.state is ExecutionState.PAUSED for o in paused)
            assert client.resume_execution(held[0]).state is not ExecutionState.PAUSED
            with pytest.raises(errors.IllegalTransition):
                client.resume_execution(held[0], node_id="wait")
            cancelled = list(client.control_executions("cancel", filter='workflow = "hold"'))
            assert (
                all(o.done and o.state is ExecutionState.CANCELLED for o in cancelled)
                and len(cancelled) == 3
            )
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


async def test_rerun(client: AsyncClient) -> None:
    await client.create_workflow(source=ECHO_CHAIN.format(name="again"))
    first = await client.start_execution("again", {"v": 1})
    await client.wait(first, timeout=10)
    second = await client.rerun_execution(first, from_node="b", input={"v": 2})
    assert second.id != first.id and second.labels.get("rerun_of") == first.id
    done = await client.wait(second, timeout=10)
    assert done.state is ExecutionState.SUCCEEDED
    with pytest.raises(errors.ExecutionNotFound):
        await client.rerun_execution("nope")


async def test_wait_times_out(client: AsyncClient) -> None:
    await client.create_workflow(source=HOLD)
    execution = await client.start_execution("hold", {})
    with pytest.raises(errors.DeadlineExceeded):
        await client.wait(execution, timeout=0.3)


async def test_watch_resumes_across_a_server_restart(engine) -> None:
    """The server drains (the stream ends UNAVAILABLE); a new one comes up on the same port;
    the SDK's watch carries on after the last event it saw."""
    first = AgentrunServer(engine)
    port = await first.start("127.0.0.1:0")
    second: AgentrunServer | None = None
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            await client.create_workflow(source=HOLD)
            execution = await client.start_execution("hold", {})
            seen = []
            async for event in client.watch(execution):
                seen.append(event.sequence)
                if event.type == "node.waiting" and second is None:
                    await first.stop(0)
                    second = AgentrunServer(engine)
                    await second.start(f"127.0.0.1:{port}")
                    await engine.signal(execution.id, "go", {"x": 1})
            assert seen == list(range(1, len(seen) + 1))
            assert (await client.get_execution(execution)).state is ExecutionState.SUCCEEDED
    finally:
        await first.stop(STOP_GRACE)
        if second is not None:
            await second.stop(STOP_GRACE)
