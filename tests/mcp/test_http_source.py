"""The same test MCP server over streamable HTTP: headers from secrets, tool calls, and a
server that dies mid-call and comes back at the same URL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentrun.integrations import default_tools
from agentrun.storage.records import ExecutionState

from .conftest import kill_first_call
from .test_tool_source import HANG, workflow

TOKEN = "tok-0123456789abcdef"


def http_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "secrets": {"mcp_token": TOKEN},
        "mcp_servers": {
            "h": {
                "url": url,
                "headers": {"Authorization": {"secret": "mcp_token", "prefix": "Bearer "}},
                **extra,
            }
        },
    }


async def test_http_server_tools_with_a_token_from_the_secret_store(
    http_server, runner_factory
) -> None:
    server = http_server(token=TOKEN)
    runner = await runner_factory(http_config(server.url))
    assert "mcp.h.add" in runner.engine.tools.names()
    final, nodes = await runner.run(workflow("http-adds", "mcp.h.add", {"a": 1, "b": 2}))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].output == {"sum": 3}
    final, nodes = await runner.run(workflow("http-counts", "mcp.h.count", {"steps": 2}))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    progress = [
        e.data["progress"] for e in await runner.events(final.id) if e.type == "tool.progress"
    ]
    assert progress == [1, 2]


async def test_a_wrong_token_stops_the_start_naming_the_server(http_server) -> None:
    server = http_server(token=TOKEN)
    config = http_config(server.url, connect_timeout="10s")
    config["secrets"]["mcp_token"] = "not-the-token"
    with pytest.raises(ValueError) as caught:
        await asyncio.to_thread(default_tools, config)
    message = str(caught.value)
    assert message.startswith("mcp_servers.h: ")
    assert server.url in message
    assert "not-the-token" not in message


async def test_http_server_killed_mid_call_and_restarted_reconnects(
    http_server, runner_factory, tmp_path: Path
) -> None:
    server = http_server()
    runner = await runner_factory({"mcp_servers": {"h": {"url": server.url}}})
    marker = tmp_path / "marker"

    def kill_and_restart(pid: int) -> None:
        server.kill()
        server.start()  # at the same port: the retry finds it there

    spec = workflow("http-hangs", "mcp.h.hang_once", {"marker": str(marker)}, **HANG)
    execution_id, first_pid = await kill_first_call(runner.engine, spec, marker, kill_and_restart)
    final = await runner.engine.wait(execution_id, timeout=60)
    assert final.state is ExecutionState.SUCCEEDED, final.error
    [node] = await runner.engine.get_nodes(execution_id)
    assert node.output["first_pid"] == first_pid and node.output["pid"] != first_pid
    assert node.attempt >= 2
