"""The `openai` provider against a local chat-completions server, through real workflow runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.storage.records import ExecutionState

from .chatserver import ChatServer

KEY = "sk-test-0123456789"


class Lookup(Tool):
    name = "orders.lookup"
    description = "Looks an order up."
    args_schema = {
        "type": "object",
        "required": ["order"],
        "properties": {"order": {"type": "string"}},
    }

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, int]] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append((args, ctx.idempotency_key, ctx.attempt))
        if args["order"] == "missing":
            raise ToolFailure("orders.not_found", "no such order")
        return {"order": args["order"], "status": "shipped"}


def config(server: ChatServer, **extra: Any) -> dict[str, Any]:
    return {
        "openai": {
            "base_url": server.base_url,
            "prices": {"gpt-test": {"prompt": 1.0, "completion": 2.0}},
            **extra,
        }
    }


PLAIN = """
name: plain
nodes:
  - id: ask
    agent: {model: openai/gpt-test, system: Be brief., prompt: "Say hi to ${{ input.who }}", temperature: 0.5, max_tokens: 50}
"""

TOOLS = """
name: tooled
nodes:
  - id: agent
    agent:
      model: openai/gpt-test
      prompt: "Where is order ${{ input.order }}?"
      tools: [orders.lookup]
      max_turns: 3
"""


@pytest.mark.parametrize("stream", [True, False])
async def test_plain_answer_usage_cost_and_auth(stream, runner_factory) -> None:
    async with ChatServer([{"content": "Hello, Ann! Nice to meet you."}], pause=0.06) as server:
        runner = await runner_factory(
            config(server, stream=stream), secrets={"openai_api_key": KEY}
        )
        final, nodes = await runner.run(PLAIN, {"who": "Ann"})
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert final.output == {"ask": {"text": "Hello, Ann! Nice to meet you."}}
        [request] = server.requests
        assert request.headers["authorization"] == f"Bearer {KEY}"
        body = server.bodies[0]
        assert (
            body["model"] == "gpt-test" and body["temperature"] == 0.5 and body["max_tokens"] == 50
        )
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi to Ann"},
        ]
        assert body.get("stream", False) is stream
        # 2 messages: 22 prompt tokens, 7 completion tokens; $1 and $2 per million.
        expected = {"prompt_tokens": 22, "completion_tokens": 7, "total_tokens": 29}
        assert {k: nodes["ask"].usage[k] for k in expected} == expected
        assert nodes["ask"].usage["cost"] == pytest.approx(22e-6 + 14e-6)
        assert final.usage["cost"] == pytest.approx(22e-6 + 14e-6)
        deltas = [e for e in await runner.events(final.id) if e.type == "agent.delta"]
        if stream:
            assert "".join(e.data["text"] for e in deltas) == "Hello, Ann! Nice to meet you."
            assert len(deltas) > 1 and all(e.node_id == "ask" for e in deltas)
        else:
            assert deltas == []


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calling_loop(stream, runner_factory) -> None:
    lookup = Lookup()
    script = [
        {
            "tool_calls": [
                {"name": "orders_lookup", "arguments": json.dumps({"order": "A-1"})},
                {"name": "orders_lookup", "arguments": json.dumps({"order": "missing"})},
            ]
        },
        {"content": "Order A-1 has shipped."},
    ]
    async with ChatServer(script) as server:
        runner = await runner_factory(config(server, stream=stream), extra_tools=[lookup])
        final, nodes = await runner.run(TOOLS, {"order": "A-1"})
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert final.output == {"agent": {"text": "Order A-1 has shipped."}}
        eid = final.id
        assert lookup.calls == [
            ({"order": "A-1"}, f"{eid}/agent/tools/1.0", 1),
            ({"order": "missing"}, f"{eid}/agent/tools/1.1", 1),
        ]
        first, second = server.bodies
        assert first["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "orders_lookup",
                    "description": "Looks an order up.",
                    "parameters": Lookup.args_schema,
                },
            }
        ]
        assistant, ok, failed = second["messages"][1:]
        assert [c["function"]["name"] for c in assistant["tool_calls"]] == [
            "orders_lookup",
            "orders_lookup",
        ]
        assert ok == {
            "role": "tool",
            "tool_call_id": "call_0",
            "content": json.dumps({"order": "A-1", "status": "shipped"}),
        }
        assert json.loads(failed["content"]) == {
            "error": {"type": "orders.not_found", "message": "no such order"}
        }
        events = await runner.events(eid)
        assert [
            (e.type, e.data["tool"], e.data.get("ok"))
            for e in events
            if e.type.startswith("agent.tool")
        ] == [
            ("agent.tool_call", "orders.lookup", None),
            ("agent.tool_result", "orders.lookup", True),
            ("agent.tool_call", "orders.lookup", None),
            ("agent.tool_result", "orders.lookup", False),
        ]
        # Two model calls: usage sums both.
        assert nodes["agent"].usage["prompt_tokens"] == 11 * 1 + 11 * 4
        assert nodes["agent"].usage["completion_tokens"] == 14


async def test_bad_tool_arguments_go_back_to_the_model(runner_factory) -> None:
    lookup = Lookup()
    script = [
        {"tool_calls": [{"name": "orders_lookup", "arguments": "{not json"}]},
        {"tool_calls": [{"name": "orders_lookup", "arguments": json.dumps({"order": 5})}]},
        {"tool_calls": [{"name": "no_such_tool", "arguments": "{}"}]},
        {"content": "Sorry."},
    ]
    async with ChatServer(script) as server:
        runner = await runner_factory(config(server), extra_tools=[lookup])
        final, _ = await runner.run(TOOLS.replace("max_turns: 3", "max_turns: 4"), {"order": "A-1"})
        assert final.state is ExecutionState.SUCCEEDED, final.error
        errors = [
            json.loads(m["content"])["error"]["type"]
            for m in server.bodies[-1]["messages"]
            if m["role"] == "tool"
        ]
        assert errors == ["invalid_args", "invalid_args", "unknown_tool"]
        assert lookup.calls == []


async def test_max_turns_bounds_the_loop(runner_factory) -> None:
    call = {"tool_calls": [{"name": "orders_lookup", "arguments": json.dumps({"order": "A-1"})}]}
    async with ChatServer([call, call, call, call]) as server:
        runner = await runner_factory(config(server), extra_tools=[Lookup()])
        final, nodes = await runner.run(TOOLS, {"order": "A-1"})
        assert final.state is ExecutionState.FAILED
        assert (
            nodes["agent"].error["type"] == "agent_error"
            and "max_turns" in nodes["agent"].error["message"]
        )
        assert len(server.bodies) == 3
        assert server.bodies[-1]["tool_choice"] == "none" and "tool_choice" not in server.bodies[0]


STRUCTURED = """
name: structured
nodes:
  - id: classify
    retry: {max_attempts: 2, initial_interval: 10ms}
    agent:
      model: openai/gpt-test
      prompt: Classify it
      output_schema: {type: object, required: [category], properties: {category: {enum: [order, billing]}}}
"""


@pytest.mark.parametrize("stream", [True, False])
async def test_structured_output_validated_and_retried(stream, runner_factory) -> None:
    script = [
        {"content": json.dumps({"category": "weather"})},
        {"content": json.dumps({"category": "billing"})},
    ]
    async with ChatServer(script) as server:
        runner = await runner_factory(config(server, stream=stream))
        final, nodes = await runner.run(STRUCTURED)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert final.output == {"classify": {"category": "billing"}}
        assert nodes["classify"].attempt == 2
        assert server.bodies[0]["response_format"] == {
            "type": "json_schema",
            "json_schema": {
                "name": "output",
                "strict": False,
                "schema": {
                    "type": "object",
                    "required": ["category"],
                    "properties": {"category": {"enum": ["order", "billing"]}},
                },
            },
        }
        failed = [e for e in await runner.events(final.id) if e.type == "node.retrying"]
        assert failed and failed[0].data["error"]["type"] == "invalid_output"


async def test_structured_output_not_json(runner_factory) -> None:
    async with ChatServer([{"content": "category: order"}]) as server:
        runner = await runner_factory(config(server))
        _final, nodes = await runner.run(STRUCTURED.replace("max_attempts: 2", "max_attempts: 1"))
        assert nodes["classify"].error["type"] == "invalid_output"


@pytest.mark.parametrize(
    ("step", "error_type", "retry_after"),
    [
        (
            {
                "status": 429,
                "headers": {"Retry-After": "3"},
                "json": {"error": {"message": "Rate limit reached"}},
            },
            "rate_limited",
            3,
        ),
        (
            {"status": 500, "json": {"error": {"message": "The server had an error"}}},
            "agent_error",
            None,
        ),
        ({"status": 503}, "agent_error", None),
        ({"status": 401, "json": {"error": {"message": "Incorrect API key"}}}, "agent_error", None),
        ({"raw": b'{"choices": [ {"message": '}, "agent_error", None),
        ({"raw": b"<html>gateway</html>"}, "agent_error", None),
        ({"raw": b'{"object": "list"}'}, "agent_error", None),
    ],
    ids=["429", "500", "503", "401", "truncated-json", "html", "no-choices"],
)
async def test_errors_are_mapped(step, error_type, retry_after, runner_factory) -> None:
    async with ChatServer([step]) as server:
        runner = await runner_factory(config(server, stream=False))
        final, nodes = await runner.run(PLAIN, {"who": "Ann"})
        assert final.state is ExecutionState.FAILED
        error = nodes["ask"].error
        assert error["type"] == error_type, error
        assert error.get("retry_after") == retry_after


async def test_malformed_stream_is_an_agent_error(runner_factory) -> None:
    raw = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\ndata: {"choices": [{\n\n'
    async with ChatServer([{"raw": raw}]) as server:
        runner = await runner_factory(config(server))
        _, nodes = await runner.run(PLAIN, {"who": "Ann"})
        assert nodes["ask"].error["type"] == "agent_error"
        assert "malformed JSON" in nodes["ask"].error["message"]


async def test_rate_limit_waits_retry_after_then_succeeds(runner_factory) -> None:
    script = [{"status": 429, "headers": {"Retry-After": "0.3"}}, {"content": "ok"}]
    async with ChatServer(script) as server:
        runner = await runner_factory(config(server))
        final, nodes = await runner.run(
            PLAIN.replace(
                "id: ask\n", "id: ask\n    retry: {max_attempts: 2, initial_interval: 1ms}\n"
            ),
            {"who": "Ann"},
        )
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert nodes["ask"].attempt == 2
        assert final.ended_at - final.started_at >= 0.3


async def test_unreachable_endpoint_is_an_agent_error(runner_factory) -> None:
    runner = await runner_factory({"openai": {"base_url": "http://127.0.0.1:1/v1"}})
    _final, nodes = await runner.run(PLAIN, {"who": "Ann"})
    assert nodes["ask"].error["type"] == "agent_error"


def test_model_aliases_and_listed_models() -> None:
    from agentrun.integrations import default_agents

    agents = default_agents(
        {"openai": {"models": {"support": "gpt-4o-mini"}, "only_listed_models": True}}
    )
    provider = agents.get("openai")
    assert provider.knows_model("support") and not provider.knows_model("gpt-4o")
    assert default_agents({}).get("openai").knows_model("anything")
    with pytest.raises(ValueError, match="unknown keys"):
        default_agents({"openai": {"base_uri": "x"}})


async def test_missing_key_for_the_default_endpoint_and_a_key_quoted_back(
    runner_factory, monkeypatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runner = await runner_factory({})
    _, nodes = await runner.run(PLAIN, {"who": "Ann"})
    assert (
        nodes["ask"].error["type"] == "agent_error"
        and "no API key" in nodes["ask"].error["message"]
    )
    # A key that is not in the secret store (read from the environment) is still not echoed.
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    step = {"status": 401, "json": {"error": {"message": f"Incorrect API key provided: {KEY}"}}}
    async with ChatServer([step]) as server:
        runner = await runner_factory(config(server))
        _, nodes = await runner.run(PLAIN, {"who": "Ann"})
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(nodes["ask"].error) and "[REDACTED]" in nodes["ask"].error["message"]
