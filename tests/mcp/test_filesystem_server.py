"""A third-party MCP server from the npm registry, `@modelcontextprotocol/server-filesystem`
(installed in tests/mcp/node_modules by scripts/ensure-test-tools.sh), serves its read and
list tools on a temporary directory to a workflow and to agents' tool loops."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine.ports import Effect
from agentrun.storage.records import ExecutionState
from tests.integrations.chatserver import ChatServer

HERE = Path(__file__).resolve().parent
SERVER = HERE / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
pytestmark = pytest.mark.timeout(120)


def fs_config(root: Path, **extra: Any) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not SERVER.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=300,
        )
    return {"mcp_servers": {"fs": {"command": node, "args": [str(SERVER), str(root)], **extra}}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "todo.txt").write_text("buy milk\nwrite tests\n")
    (root / "readme.md").write_text("# files\n")
    return root.resolve()


READ_AND_LIST = """
name: fs-read
nodes:
  - id: listing
    tool: {name: mcp.fs.list_directory, args: {path: "${{ input.dir }}"}}
  - id: todo
    tool: {name: mcp.fs.read_text_file, args: {path: "${{ input.dir + '/notes/todo.txt' }}"}}
  - id: outside
    tool: {name: mcp.fs.read_text_file, args: {path: /etc/hostname}}
    retry: {max_attempts: 1}
output: "${{ {'listing': nodes.listing.output.content, 'todo': nodes.todo.output.content} }}"
error_handlers:
  - match: {nodes: outside}
    action: skip
    output: {refused: true}
"""


async def test_filesystem_tools_in_a_workflow(root: Path, runner_factory) -> None:
    runner = await runner_factory(fs_config(root))
    tools = runner.engine.tools
    assert tools.get("mcp.fs.read_text_file").effect == Effect.PURE  # readOnlyHint
    assert tools.get("mcp.fs.write_file").effect == Effect.IRREVERSIBLE  # destructiveHint
    assert tools.get("mcp.fs.create_directory").effect == Effect.IDEMPOTENT
    final, _nodes = await runner.run(READ_AND_LIST, {"dir": str(root)})
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output["todo"] == "buy milk\nwrite tests\n"
    assert sorted(final.output["listing"].splitlines()) == ["[DIR] notes", "[FILE] readme.md"]


async def test_a_path_outside_the_root_is_a_tool_error(root: Path, runner_factory) -> None:
    runner = await runner_factory(fs_config(root, include=["read_text_file"]))
    assert [n for n in runner.engine.tools.names() if n.startswith("mcp.")] == [
        "mcp.fs.read_text_file"
    ]
    spec = json.dumps(
        {
            "name": "fs-outside",
            "nodes": [
                {
                    "id": "read",
                    "tool": {"name": "mcp.fs.read_text_file", "args": {"path": "/etc/hostname"}},
                }
            ],
        }
    )
    final, nodes = await runner.run(spec)
    assert final.state is ExecutionState.FAILED
    assert nodes["read"].error["type"] == "tool_error"
    assert "outside allowed directories" in nodes["read"].error["message"]


AGENT = """
name: fs-agent
nodes:
  - id: agent
    agent:
      model: MODEL
      prompt: What is on my todo list?
      tools: [mcp.fs.read_text_file, mcp.fs.list_directory]
      max_turns: 3
"""


async def test_mock_agent_reads_a_file(root: Path, runner_factory) -> None:
    config = fs_config(root)
    config["mock"] = {
        "responses": {
            "assistant": [
                {
                    "tool_calls": [
                        {"name": "mcp.fs.list_directory", "args": {"path": str(root / "notes")}},
                        {
                            "name": "mcp.fs.read_text_file",
                            "args": {"path": str(root / "notes" / "todo.txt")},
                        },
                    ]
                },
                {"answer": "milk and tests"},
            ]
        }
    }
    runner = await runner_factory(config)
    final, _nodes = await runner.run(AGENT.replace("MODEL", "mock/assistant"))
    assert final.state is ExecutionState.SUCCEEDED, final.error
    results = [e.data for e in await runner.events(final.id) if e.type == "agent.tool_result"]
    assert [(r["tool"], r["ok"]) for r in results] == [
        ("mcp.fs.list_directory", True),
        ("mcp.fs.read_text_file", True),
    ]


async def test_openai_agent_reads_a_file(root: Path, runner_factory) -> None:
    script = [
        {
            "tool_calls": [
                {
                    "name": "mcp_fs_read_text_file",
                    "arguments": json.dumps({"path": str(root / "notes" / "todo.txt")}),
                }
            ]
        },
        {"content": "Buy milk, then write tests."},
    ]
    async with ChatServer(script) as chat:
        config = {**fs_config(root), "openai": {"base_url": chat.base_url}}
        runner = await runner_factory(config, secrets={"openai_api_key": "sk-test-0123456789"})
        final, nodes = await runner.run(AGENT.replace("MODEL", "openai/gpt-test"))
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert nodes["agent"].output == {"text": "Buy milk, then write tests."}
        offered = {t["function"]["name"] for t in chat.bodies[0]["tools"]}
        assert offered == {"mcp_fs_read_text_file", "mcp_fs_list_directory"}
        tool_message = chat.bodies[1]["messages"][-1]
        assert json.loads(tool_message["content"]) == {"content": "buy milk\nwrite tests\n"}
