"""`agentrun serve --config` with `mcp_servers:`: the tools are in ListTools, workflows call
them, and the stdio server process ends with the agentrun server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentrun.client import AsyncClient, ExecutionState
from agentrun.v1 import workflow_service_pb2 as ws_pb
from tests.server.subprocess_server import ServerProcess

from .conftest import eventually, pid_alive, stdio_server

pytestmark = pytest.mark.timeout(120)

WHOAMI = {
    "name": "mcp-whoami",
    "nodes": [{"id": "me", "tool": {"name": "mcp.t.whoami", "args": {}}}],
}


async def test_serve_lists_mcp_tools_runs_them_and_stops_the_server_process(tmp_path: Path) -> None:
    config = tmp_path / "agentrun.yaml"
    config.write_text(yaml.safe_dump({"mcp_servers": {"t": stdio_server()}}))
    server = ServerProcess(tmp_path, args=["--config", str(config)]).start()
    try:
        async with AsyncClient(server.address) as client:
            listed = await client.call(
                client.workflow_service.ListTools, ws_pb.ListToolsRequest(filter="mcp.t.")
            )
            tools = {t.name: t for t in listed.tools}
            assert "mcp.t.add" in tools and "mcp.t.drop" in tools
            assert tools["mcp.t.add"].effect == ws_pb.Tool.EFFECT_PURE
            assert tools["mcp.t.drop"].effect == ws_pb.Tool.EFFECT_IRREVERSIBLE
            assert list(tools["mcp.t.add"].args_schema["required"]) == ["a", "b"]
            await client.create_workflow(WHOAMI)
            execution = await client.start_execution("mcp-whoami")
            done = await client.wait(execution, timeout=60)
            assert done.state is ExecutionState.SUCCEEDED, done.error
            pid = int(done.output["me"]["pid"])
        assert pid_alive(pid)
        assert server.terminate() == 0
        await eventually(lambda: not pid_alive(pid), what="the MCP server process to end")
    finally:
        server.stop()


def test_serve_refuses_to_start_when_an_mcp_server_cannot_start(tmp_path: Path) -> None:
    config = tmp_path / "agentrun.yaml"
    config.write_text(
        yaml.safe_dump({"mcp_servers": {"gone": {"command": str(tmp_path / "no-such-program")}}})
    )
    server = ServerProcess(tmp_path, args=["--config", str(config)])
    with pytest.raises(RuntimeError) as caught:
        server.start()
    assert "server exited 2" in str(caught.value)
    log = server.log.read_text()
    assert "agentrun: config: mcp_servers.gone: cannot connect to MCP server 'gone'" in log
    assert "no-such-program" in log and "internal error" not in log


def test_run_with_a_config_naming_an_mcp_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentrun.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"mcp_servers": {"t": stdio_server()}}))
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        yaml.safe_dump(
            {
                "name": "local-add",
                "nodes": [
                    {
                        "id": "sum",
                        "tool": {"name": "mcp.t.add", "args": {"a": "${{ input.a }}", "b": 2}},
                    }
                ],
            }
        )
    )
    capsys.readouterr()
    assert main(["validate", str(flow), "--config", str(config)]) == 0
    capsys.readouterr()
    assert (
        main(
            ["run", str(flow), "--config", str(config), "--memory", "--input", '{"a": 5}', "--json"]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["execution"]["state"] == "STATE_SUCCEEDED"
    assert printed["execution"]["output"] == {"sum": {"sum": 7}}
