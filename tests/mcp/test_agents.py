"""Agent nodes offer MCP tools to the model in their tool-calling loop: with the mock provider
and with the OpenAI-compatible provider against a local chat-completions server."""

from __future__ import annotations

import json

import pytest

from agentrun.storage.records import ExecutionState
from tests.integrations.chatserver import ChatServer

from .conftest import stdio_server

MOCK = """
name: mcp-mock-agent
nodes:
  - id: agent
    agent:
      model: mock/assistant
      prompt: Remember my favourite colour.
      tools: [mcp.t.put, mcp.t.add]
  - id: check
    needs: [agent]
    tool: {name: mcp.t.get, args: {key: colour}}
"""

OPENAI = """
name: mcp-openai-agent
nodes:
  - id: agent
    agent:
      model: openai/gpt-test
      prompt: "What is ${{ input.a }} + ${{ input.b }}?"
      tools: [mcp.t.add]
      max_turns: 3
"""


async def test_mock_agent_calls_mcp_tools(runner_factory) -> None:
    config = {
        "mcp_servers": {"t": stdio_server()},
        "mock": {
            "responses": {
                "assistant": [
                    {
                        "tool_calls": [
                            {"name": "mcp.t.put", "args": {"key": "colour", "value": "blue"}},
                            {"name": "mcp.t.add", "args": {"a": 1, "b": "two"}},
                        ]
                    },
                    {"answer": "noted"},
                ]
            }
        },
    }
    runner = await runner_factory(config)
    final, nodes = await runner.run(MOCK)
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert nodes["agent"].output == {"answer": "noted"}
    # The agent's call reached the server: the same session's process holds the value.
    assert nodes["check"].output == {"key": "colour", "value": "blue"}
    results = [e.data for e in await runner.events(final.id) if e.type == "agent.tool_result"]
    assert [(r["tool"], r["ok"]) for r in results] == [("mcp.t.put", True), ("mcp.t.add", False)]
    assert results[1]["error"]["type"] == "invalid_args"


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_agent_calls_mcp_tools(stream, runner_factory) -> None:
    script = [
        {"tool_calls": [{"name": "mcp_t_add", "arguments": json.dumps({"a": 20, "b": 22})}]},
        {"content": "20 + 22 = 42"},
    ]
    async with ChatServer(script) as chat:
        config = {
            "mcp_servers": {"t": stdio_server()},
            "openai": {"base_url": chat.base_url, "stream": stream},
        }
        runner = await runner_factory(config, secrets={"openai_api_key": "sk-test-0123456789"})
        final, nodes = await runner.run(OPENAI, {"a": 20, "b": 22})
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert nodes["agent"].output == {"text": "20 + 22 = 42"}
        first, second = chat.bodies
        [offered] = first["tools"]
        assert offered["function"]["name"] == "mcp_t_add"
        assert offered["function"]["description"] == "Adds two integers."
        assert offered["function"]["parameters"]["required"] == ["a", "b"]
        tool_message = second["messages"][-1]
        assert tool_message["role"] == "tool"
        assert json.loads(tool_message["content"]) == {"sum": 42}
