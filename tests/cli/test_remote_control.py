"""`agentrun pause|resume|rerun|cancel --compensate` against a real in-process server.

The CLI's client is synchronous, so each command runs in a worker thread while the server
serves on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.cli import build_parser
from agentrun.client import AsyncClient, ExecutionState
from agentrun.engine import Engine
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.storage.memory import MemoryStore
from tests.server.conftest import STOP_GRACE

# Long enough that a command sent right after the start finds it running on a loaded machine.
SLOW = """
name: slow
nodes:
  - {id: a, tool: {name: core.sleep, args: {seconds: 1}}}
  - {id: b, needs: [a], tool: {name: core.sleep, args: {seconds: 1}}}
  - {id: c, needs: [b], tool: {name: core.echo, args: {done: true}}}
"""

FLAKY = """
name: flaky
nodes:
  - {id: first, tool: {name: core.echo, args: {n: 1}}}
  - id: check
    needs: [first]
    tool: {name: core.fail, args: {type: bad.input, succeed_on_attempt: "${{ input.ok_at }}"}}
  - {id: last, needs: [check], tool: {name: core.echo, args: {n: 3}}}
"""

SAGA = """
name: saga
nodes:
  - id: reserve
    tool: {name: core.echo, args: {reservation: R-1}}
    compensate: {tool: {name: core.echo, args: {released: "${{ output.reservation }}"}}}
  - {id: wait, needs: [reserve], tool: {name: core.sleep, args: {seconds: 30}}}
"""


def run_cli(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.handler(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, AsyncClient]]:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    srv = AgentrunServer(engine, ServerConfig.load(env={}))
    port = await srv.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    try:
        async with AsyncClient(address, api_key="") as client:
            for source in (SLOW, FLAKY, SAGA):
                await client.create_workflow(source=source)
            yield address, client
    finally:
        await srv.stop(STOP_GRACE)
        await engine.stop(grace=0)


async def _cli(address: str, *argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, *argv, "--server", address, "--api-key", "")


async def _wait(client: AsyncClient, execution_id: str, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            execution = await client.get_execution(execution_id)
            if execution.state.value in {
                "SUCCEEDED",
                "FAILED",
                "CANCELLED",
                "COMPENSATED",
                "COMPENSATION_FAILED",
                "TIMED_OUT",
            }:
                return execution
            await asyncio.sleep(0.02)


async def test_pause_then_resume(server) -> None:
    address, client = server
    execution = await client.start_execution("slow", {})
    code, out, err = await _cli(address, "pause", execution.id)
    assert code == 0, err
    assert out.split() == [execution.id, "PAUSED"]
    # Paused: the running node finishes, nothing new starts.
    await asyncio.sleep(0.5)
    assert (await client.get_execution(execution.id)).state is ExecutionState.PAUSED
    events = [e async for e in client.list_execution_events(execution.id)]
    paused_at = next(e.sequence for e in events if e.type == "execution.paused")
    assert not [e for e in events if e.type == "node.running" and e.sequence > paused_at]

    # Pausing twice is illegal: FAILED_PRECONDITION, exit 1, the state named.
    code, _, err = await _cli(address, "pause", execution.id)
    assert code == 1 and "failed_precondition" in err and "PAUSED" in err

    code, out, err = await _cli(address, "resume", execution.id, "--json")
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["name"] == execution.name and resumed["state"] != "STATE_PAUSED"
    final = await _wait(client, execution.id)
    assert final.state is ExecutionState.SUCCEEDED

    # Resuming a finished execution is illegal too.
    code, _, err = await _cli(address, "resume", execution.id)
    assert code == 1 and "failed_precondition" in err and "SUCCEEDED" in err


async def test_rerun_from_node_with_new_input(server) -> None:
    address, client = server
    execution = await client.start_execution("flaky", {"ok_at": 2})
    failed = await _wait(client, execution.id)
    assert failed.state is ExecutionState.FAILED

    # Default: from the failed node, with the old input; fails again.
    code, out, err = await _cli(address, "rerun", execution.id)
    assert code == 0, err
    again = await _wait(client, out.strip())
    assert again.state is ExecutionState.FAILED and again.id != execution.id

    # From `check` with an input that lets it pass; `first` is reused, not run again.
    code, out, err = await _cli(
        address, "rerun", execution.id, "--from", "check", "--input", '{"ok_at": 1}', "--json"
    )
    assert code == 0, err
    started = json.loads(out)
    assert started["labels"]["rerun_of"] == execution.id
    assert started["labels"]["rerun_from"] == "check"
    final = await _wait(client, started["name"])
    assert final.state is ExecutionState.SUCCEEDED
    events = [e async for e in client.list_execution_events(started["name"])]
    ran = {e.node_id for e in events if e.type == "node.running"}
    assert ran == {"check", "last"}

    # --watch follows the rerun to its end; the exit code says how it ended.
    code, out, err = await _cli(
        address, "rerun", execution.id, "--input", '{"ok_at": 1}', "--watch"
    )
    assert code == 0, err
    assert out.splitlines()[-1].startswith("SUCCEEDED")

    # Usage errors: bad JSON (exit 2), an unknown node (invalid argument, exit 2).
    code, _, err = await _cli(address, "rerun", execution.id, "--input", "{nope")
    assert code == 2 and "--input" in err
    code, _, err = await _cli(address, "rerun", execution.id, "--from", "nowhere")
    assert code == 2 and "nowhere" in err


async def test_rerun_of_a_running_execution_is_refused(server) -> None:
    address, client = server
    execution = await client.start_execution("slow", {})
    code, _, err = await _cli(address, "rerun", execution.id)
    assert code == 1 and "failed_precondition" in err and "RUNNING" in err
    await _wait(client, execution.id)


async def test_cancel_with_compensation(server) -> None:
    address, client = server
    execution = await client.start_execution("saga", {})
    async with asyncio.timeout(5):
        while True:
            events = [e async for e in client.list_execution_events(execution.id)]
            if any(e.type == "node.running" and e.node_id == "wait" for e in events):
                break
            await asyncio.sleep(0.02)
    code, out, err = await _cli(address, "cancel", execution.id, "--compensate")
    assert code == 0, err
    assert out.split()[0] == execution.id
    assert out.split()[1] in {"COMPENSATING", "COMPENSATED"}
    final = await _wait(client, execution.id)
    assert final.state is ExecutionState.COMPENSATED
    events = [e async for e in client.list_execution_events(execution.id)]
    undo = [e for e in events if e.type == "node.succeeded" and e.node_id == "reserve.compensate"]
    assert len(undo) == 1 and undo[0].data["output"] == {"released": "R-1"}

    # Plain cancel of a finished execution: refused with its state.
    code, _, err = await _cli(address, "cancel", execution.id)
    assert code == 1 and "failed_precondition" in err and "COMPENSATED" in err


async def test_plain_cancel_does_not_compensate(server) -> None:
    address, client = server
    execution = await client.start_execution("saga", {})
    async with asyncio.timeout(5):
        while True:
            events = [e async for e in client.list_execution_events(execution.id)]
            if any(e.type == "node.running" and e.node_id == "wait" for e in events):
                break
            await asyncio.sleep(0.02)
    code, out, err = await _cli(address, "cancel", execution.id, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "STATE_CANCELLED"
    events = [e async for e in client.list_execution_events(execution.id)]
    assert not any(e.node_id == "reserve.compensate" for e in events)


STUCK = """
name: stuck
nodes:
  - id: check
    tool: {name: core.fail, args: {type: bad.input}}
    on_exhausted: pause
"""


async def test_resume_a_node_paused_on_with_new_args(server) -> None:
    address, client = server
    await client.create_workflow(source=STUCK)
    execution = await client.start_execution("stuck", {})
    async with asyncio.timeout(30):
        while (await client.get_execution(execution.id)).state is not ExecutionState.PAUSED:
            await asyncio.sleep(0.02)
    code, _, err = await _cli(
        address, "resume", execution.id, "--node", "check", "--args", '{"succeed_on_attempt": 0}'
    )
    assert code == 2 and "args.succeed_on_attempt" in err
    code, _, err = await _cli(address, "resume", execution.id, "--node", "nowhere")
    assert code == 1 and "failed_precondition" in err
    code, _, err = await _cli(
        address, "resume", execution.id, "--node", "check", "--args", '{"succeed_on_attempt": 1}'
    )
    assert code == 0, err
    final = await _wait(client, execution.id)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"check": {"attempt": 2}}


async def test_bulk_pause_and_cancel_by_workflow(server) -> None:
    address, client = server
    ids = sorted([(await client.start_execution("saga", {})).id for _ in range(3)])
    async with asyncio.timeout(30):
        while [(await client.get_execution(i)).state for i in ids] != [ExecutionState.RUNNING] * 3:
            await asyncio.sleep(0.02)
    code, out, err = await _cli(
        address, "executions", "pause", "--workflow", "saga", "--page-size", "2"
    )
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()] == [[i, "PAUSED", "done"] for i in ids]
    code, out, _ = await _cli(address, "executions", "pause", "--workflow", "saga")
    assert code == 1 and out.count("refused ILLEGAL_TRANSITION") == 3
    code, out, err = await _cli(address, "executions", "cancel", "--state", "PAUSED", "--json")
    assert code == 0, err
    outcomes = json.loads(out)["outcomes"]
    assert sorted(o["execution"] for o in outcomes) == [f"executions/{i}" for i in ids]
    assert all(o["done"] and o["state"] == "STATE_CANCELLED" for o in outcomes)
    code, _, err = await _cli(address, "executions", "resume")
    assert code == 2 and "--workflow" in err
