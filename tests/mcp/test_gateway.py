"""`agentrun mcp`: the `mcp` SDK's client launches it over stdio (and reaches it over streamable
HTTP), against a real `agentrun serve`, lists the server's workflows as tools and runs them,
including a run longer than --wait that get_execution then polls."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, MCPError, StdioServerParameters

from agentrun.client import AsyncClient
from agentrun.client import Client as SyncClient
from tests.durability.common import wait_until
from tests.server.subprocess_server import ROOT, ServerProcess

from .conftest import free_port

pytestmark = pytest.mark.timeout(180)

AGENTRUN = [sys.executable, "-c", "import sys; from agentrun.cli import main; sys.exit(main())"]

GREET = {
    "name": "greet",
    "description": "Greets someone.",
    "input_schema": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
    },
    "nodes": [{"id": "hello", "pass": {"value": "${{ 'Hello, ' + input.name }}"}}],
    "output": "${{ {'greeting': nodes.hello.output} }}",
}
SHOUT = {
    "name": "shout",
    "input_schema": {"type": "string"},
    "nodes": [{"id": "loud", "pass": {"value": "${{ input + '!' }}"}}],
}
APPROVE = {
    "name": "approve",
    "nodes": [{"id": "gate", "wait": {"signal": "go"}}],
    "output": "${{ nodes.gate.output }}",
}
BROKEN = {
    "name": "broken",
    "nodes": [
        {
            "id": "boom",
            "tool": {"name": "core.fail", "args": {"type": "orders.gone", "message": "no order"}},
        }
    ],
}

MACHINE = {  # a state machine: instances receive events, they do not run to an output
    "name": "door",
    "mode": "state_machine",
    "initial": "shut",
    "states": {"shut": {"on": {"OPEN": {"target": "open"}}}, "open": {"final": True}},
}


def _serve(workdir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(workdir).start()
    try:
        with SyncClient(server.address) as client:
            for spec in (GREET, SHOUT, APPROVE, BROKEN, MACHINE):
                client.create_workflow(spec)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agentrun_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `agentrun serve` for the cases that add no workflow (the tool lists they read stay
    as set up here; the executions they start are their own)."""
    yield from _serve(tmp_path_factory.mktemp("gateway"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for a case that changes the workflows."""
    yield from _serve(tmp_path)


def gateway(server: ServerProcess, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=AGENTRUN[0],
        args=[*AGENTRUN[1:], "mcp", "--server", server.address, *args],
        env={"PYTHONPATH": str(ROOT)},
    )


async def test_lists_workflows_as_tools_and_runs_one(agentrun_server: ServerProcess) -> None:
    async with Client(gateway(agentrun_server)) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == {"greet", "shout", "approve", "broken", "get_execution"}
        assert tools["greet"].input_schema == GREET["input_schema"]
        assert tools["greet"].description.startswith("Greets someone.")
        assert tools["shout"].input_schema == {
            "type": "object",
            "required": ["input"],
            "properties": {"input": {"type": "string"}},
        }

        result = await mcp.call_tool("greet", {"name": "Ann"})
        assert not result.is_error
        body = result.structured_content
        assert body["state"] == "SUCCEEDED" and body["done"] is True
        assert body["output"] == {"greeting": "Hello, Ann"}
        async with AsyncClient(agentrun_server.address) as client:
            execution = await client.get_execution(body["execution_id"])
            assert execution.workflow == "greet" and execution.input == {"name": "Ann"}

        result = await mcp.call_tool("shout", {"input": "hey"})
        assert result.structured_content["output"] == {"loud": "hey!"}
        with pytest.raises(MCPError, match="no tool named 'door'"):  # a state machine
            await mcp.call_tool("door", {})


async def test_refused_input_and_failed_runs_are_tool_errors(
    agentrun_server: ServerProcess,
) -> None:
    async with Client(gateway(agentrun_server)) as mcp:
        await mcp.list_tools()
        result = await mcp.call_tool("greet", {"name": 7})
        assert result.is_error
        assert result.content[0].text.startswith("invalid input for workflow greet:")
        result = await mcp.call_tool("broken", {})
        assert result.is_error
        body = result.structured_content
        assert body["state"] == "FAILED" and body["done"] is True and "output" not in body
        assert body["error"]["type"] == "orders.gone" and body["error"]["node_id"] == "boom"
        result = await mcp.call_tool("get_execution", {"execution_id": "no-such-execution"})
        assert result.is_error and "no-such-execution" in result.content[0].text


async def test_a_long_run_returns_its_id_and_get_execution_polls_it(
    agentrun_server: ServerProcess,
) -> None:
    async with Client(gateway(agentrun_server, "--wait", "1")) as mcp:
        await mcp.list_tools()
        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        result = await mcp.call_tool("approve", {}, progress_callback=on_progress)
        assert not result.is_error
        body = result.structured_content
        assert body["done"] is False and body["state"] in ("RUNNING", "WAITING")
        assert "execution.running" in progress
        execution_id = body["execution_id"]

        polled = await mcp.call_tool("get_execution", {"execution_id": execution_id})
        assert polled.structured_content["done"] is False
        async with AsyncClient(agentrun_server.address) as client:
            await client.signal_execution(execution_id, "go", {"approved": True})
        polled = await mcp.call_tool("get_execution", {"execution_id": execution_id, "wait": 60})
        assert polled.structured_content["state"] == "SUCCEEDED"
        assert polled.structured_content["output"] == {"approved": True}


async def test_workflow_selects_the_tools(own_server: ServerProcess) -> None:
    async with Client(gateway(own_server, "--workflow", "greet", "--workflow", "later")) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"greet", "get_execution"}
        async with AsyncClient(own_server.address) as client:
            await client.create_workflow({**GREET, "name": "later"})
        # The list is read from the server each time: a workflow created later appears.
        assert {t.name for t in (await mcp.list_tools()).tools} == {
            "greet",
            "later",
            "get_execution",
        }
        with pytest.raises(MCPError, match="no tool named 'shout'"):
            await mcp.call_tool("shout", {"input": "x"})
        with pytest.raises(MCPError, match="no tool named 'Not A Name'"):
            await mcp.call_tool("Not A Name", {})


async def test_streamable_http(agentrun_server: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "mcp-http.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*AGENTRUN, "mcp", "--server", agentrun_server.address, "--http", f"127.0.0.1:{port}"],
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdout=out,
            stderr=out,
        )
    try:
        wait_until(
            lambda: "tools at http://" in log.read_text() or proc.poll() is not None,
            60,
            "agentrun mcp --http",
        )
        assert proc.poll() is None, log.read_text()
        async with Client(f"http://127.0.0.1:{port}/mcp") as mcp:
            assert "greet" in {t.name for t in (await mcp.list_tools()).tools}
            result = await mcp.call_tool("greet", {"name": "Bo"})
            assert result.structured_content["output"] == {"greeting": "Hello, Bo"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_server_is_said_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*AGENTRUN, "mcp", "--server", f"127.0.0.1:{free_port()}"],
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("agentrun: cannot reach an agentrun server at 127.0.0.1:")


def test_bad_options_are_usage_errors() -> None:
    from agentrun.cli import main

    assert main(["mcp", "--wait", "0"]) == 2
    assert main(["mcp", "--http", "nowhere"]) == 2


async def test_api_key_and_tenant(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, env={"AGENTRUN_API_KEYS": "acme-key:acme,zeta-key:zeta"}
    ).start()
    try:
        async with AsyncClient(server.address, api_key="acme-key") as client:
            await client.create_workflow(GREET)
        async with AsyncClient(server.address, api_key="zeta-key") as client:
            await client.create_workflow({**SHOUT, "name": "zeta-only"})
        async with Client(gateway(server, "--api-key", "acme-key")) as mcp:
            assert {t.name for t in (await mcp.list_tools()).tools} == {"greet", "get_execution"}
            result = await mcp.call_tool("greet", {"name": "Acme"})
            assert result.structured_content["output"] == {"greeting": "Hello, Acme"}
        done = subprocess.run(
            [*AGENTRUN, "mcp", "--server", server.address],
            env={"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert done.returncode == 1 and done.stdout == ""
        assert "unauthenticated" in done.stderr and "--api-key" in done.stderr
    finally:
        server.stop()
