"""MCP servers as a tool source: a real MCP server (toolserver.py, written with the `mcp` SDK)
over stdio and over streamable HTTP serves tools to workflows through the normal tool path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine.ports import Effect
from agentrun.integrations import default_tools
from agentrun.storage.records import ExecutionState, NodeState

from .conftest import eventually, kill_first_call, pid_alive, stdio_server


def workflow(name: str, tool: str, args: dict[str, Any], **node: Any) -> str:
    spec = {"name": name, "nodes": [{"id": "call", "tool": {"name": tool, "args": args}, **node}]}
    return json.dumps(spec)


async def test_tools_are_registered_with_schemas_and_effects_from_annotations() -> None:
    registry = default_tools({"mcp_servers": {"t": stdio_server(effects={"shout": "idempotent"})}})
    try:
        described = {d["name"]: d for d in registry.describe() if d["name"].startswith("mcp.")}
        assert set(described) == {
            f"mcp.t.{n}"
            for n in (
                "add",
                "put",
                "drop",
                "shout",
                "refuse",
                "count",
                "hang_once",
                "consume_once",
                "whoami",
                "call_meta",
                "get",
                "nap",
            )
        }
        add = described["mcp.t.add"]
        assert add["description"] == "Adds two integers."
        assert add["args_schema"]["required"] == ["a", "b"]
        assert add["args_schema"]["properties"]["a"]["type"] == "integer"
        assert add["result_schema"]["type"] == "object"
        effects = {name: d["effect"] for name, d in described.items()}
        assert effects["mcp.t.add"] == Effect.PURE  # readOnlyHint
        assert effects["mcp.t.put"] == Effect.IDEMPOTENT  # idempotentHint, not destructive
        assert effects["mcp.t.drop"] == Effect.IRREVERSIBLE  # destructiveHint
        assert effects["mcp.t.consume_once"] == Effect.IRREVERSIBLE
        assert effects["mcp.t.shout"] == Effect.IDEMPOTENT  # no hints, but `effects:` says so
    finally:
        await registry.aclose()


async def test_include_keeps_only_the_listed_tools() -> None:
    registry = default_tools({"mcp_servers": {"t": stdio_server(include=["add", "whoami"])}})
    try:
        assert [n for n in registry.names() if n.startswith("mcp.")] == [
            "mcp.t.add",
            "mcp.t.whoami",
        ]
    finally:
        await registry.aclose()


async def test_tool_node_structured_and_unstructured_results(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, nodes = await runner.run(
        workflow("adds", "mcp.t.add", {"a": "${{ input.a }}", "b": 2}), {"a": 40}
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].output == {"sum": 42}
    final, nodes = await runner.run(workflow("shouts", "mcp.t.shout", {"text": "quiet"}))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].output == {"result": "QUIET"}


async def test_one_session_is_shared_by_calls(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    spec = json.dumps(
        {
            "name": "twice",
            "nodes": [
                {"id": "a", "tool": {"name": "mcp.t.whoami", "args": {}}},
                {"id": "b", "needs": ["a"], "tool": {"name": "mcp.t.whoami", "args": {}}},
            ],
        }
    )
    final, nodes = await runner.run(spec)
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["a"].output["pid"] == nodes["b"].output["pid"]


async def test_parallel_calls_share_the_session(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    spec = json.dumps(
        {
            "name": "fan-out",
            "nodes": [
                {
                    "id": "sums",
                    "map": {
                        "items": "${{ input.numbers }}",
                        "max_concurrency": 8,
                        "node": {
                            "tool": {"name": "mcp.t.add", "args": {"a": "${{ item }}", "b": 1000}}
                        },
                    },
                }
            ],
        }
    )
    final, nodes = await runner.run(spec, {"numbers": list(range(24))})
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["sums"].output == [{"sum": n + 1000} for n in range(24)]
    assert runner.engine.tools.get("mcp.t.add")._connection.opened == 1


async def test_a_node_timeout_cancels_the_request_and_keeps_the_session(
    runner_factory, tmp_path: Path
) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, _ = await runner.run(workflow("me", "mcp.t.whoami", {}))
    pid = final.output["call"]["pid"] if final.output else None
    marker = tmp_path / "cancelled"
    final, nodes = await runner.run(
        workflow("naps", "mcp.t.nap", {"seconds": 120, "marker": str(marker)}, timeout="1s")
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["call"].error["type"] == "timeout"
    # The MCP request was cancelled on the server, not left running there.
    await eventually(
        lambda: marker.exists() and marker.read_text() == "cancelled", what="the cancellation"
    )
    final, nodes = await runner.run(workflow("me-again", "mcp.t.whoami", {}))
    assert nodes["call"].output["pid"] == pid


async def test_is_error_becomes_a_tool_error(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, nodes = await runner.run(workflow("refuses", "mcp.t.refuse", {"reason": "closed"}))
    assert final.state is ExecutionState.FAILED
    error = nodes["call"].error
    assert error["type"] == "tool_error"
    assert "refused: closed" in error["message"]
    assert error["details"]["content"][0]["type"] == "text"


async def test_args_are_checked_against_the_input_schema_before_the_call(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, nodes = await runner.run(
        workflow("bad-args", "mcp.t.add", {"a": "${{ input.a }}", "b": 1}), {"a": "x"}
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["call"].error["type"] == "invalid_args"
    assert nodes["call"].error["details"]["field"] == "args.a"


async def test_progress_notifications_become_events(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, nodes = await runner.run(workflow("counts", "mcp.t.count", {"steps": 3}))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].output == {"counted": 3}
    progress = [e for e in await runner.events(final.id) if e.type == "tool.progress"]
    assert [
        (e.node_id, e.data["progress"], e.data["total"], e.data["message"]) for e in progress
    ] == [("call", 1, 3, "step 1"), ("call", 2, 3, "step 2"), ("call", 3, 3, "step 3")]
    assert all(e.data["tool"] == "mcp.t.count" for e in progress)


async def test_idempotency_key_and_attempt_reach_the_server_in_meta(runner_factory) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    spec = workflow(
        "meta", "mcp.t.call_meta", {}, retry={"max_attempts": 2, "initial_interval": "10ms"}
    )
    final, nodes = await runner.run(spec)
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].output == {
        "io.agentrun/idempotencyKey": f"{final.id}/call",
        "io.agentrun/attempt": 1,
        "io.agentrun/executionId": final.id,
    }


HANG = {"retry": {"max_attempts": 3, "initial_interval": "10ms"}, "timeout": "60s"}


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


async def test_server_killed_mid_call_reconnects_on_retry(runner_factory, tmp_path: Path) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    marker = tmp_path / "marker"
    spec = workflow("hangs", "mcp.t.hang_once", {"marker": str(marker)}, **HANG)
    execution_id, first_pid = await kill_first_call(runner.engine, spec, marker, sigkill)
    final = await runner.engine.wait(execution_id, timeout=60)
    assert final.state is ExecutionState.SUCCEEDED, final.error
    [node] = await runner.engine.get_nodes(execution_id)
    assert node.attempt == 2
    assert node.output["first_pid"] == first_pid
    assert node.output["pid"] != first_pid and pid_alive(node.output["pid"])
    retried = [e for e in await runner.events(execution_id) if e.type == "node.retrying"]
    assert retried and retried[0].data["error"]["type"] == "mcp.unavailable"


async def test_a_server_that_died_while_idle_is_replaced_before_the_next_call(
    runner_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentrun.integrations.mcp import connection

    monkeypatch.setattr(connection, "IDLE_CHECK_SECONDS", 0.0)  # every call counts as after idle
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    final, nodes = await runner.run(workflow("me", "mcp.t.whoami", {}))
    first = nodes["call"].output["pid"]
    final, nodes = await runner.run(workflow("me-too", "mcp.t.whoami", {}))
    assert nodes["call"].output["pid"] == first  # a live session passes the check
    assert runner.engine.tools.get("mcp.t.whoami")._connection.opened == 1
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: not pid_alive(first), what="the server process to die")
    # No retry policy: the call must not fail because the old session is gone.
    final, nodes = await runner.run(workflow("me-again", "mcp.t.whoami", {}))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["call"].attempt == 1 and nodes["call"].output["pid"] != first


async def test_a_destructive_tool_is_not_called_again_after_a_lost_call(
    runner_factory, tmp_path: Path
) -> None:
    runner = await runner_factory({"mcp_servers": {"t": stdio_server()}})
    marker = tmp_path / "marker"
    spec = workflow("consumes", "mcp.t.consume_once", {"marker": str(marker)}, **HANG)
    execution_id, _ = await kill_first_call(runner.engine, spec, marker, sigkill)
    final = await runner.engine.wait(execution_id, timeout=60)
    assert final.state is ExecutionState.FAILED
    [node] = await runner.engine.get_nodes(execution_id)
    assert node.state is NodeState.FAILED and node.attempt == 1
    assert node.error["type"] == "mcp.unavailable"
