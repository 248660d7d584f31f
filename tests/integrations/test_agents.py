"""Provider config: named providers chosen by environment, env expansion, the mock's tool loop."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine.ports import CallContext
from agentrun.integrations import FunctionTool, MockProvider, OpenAIProvider
from agentrun.integrations.agents import build_providers
from agentrun.storage.records import ExecutionState

CANDIDATES = {
    "agents": {
        "support": [
            {
                "type": "openai",
                "requires_env": ["T_BASE", "T_KEY"],
                "base_url": "${T_BASE}",
                "models": {"assistant": "${T_MODEL:-gpt-4o-mini}"},
            },
            {"type": "mock", "responses": {"assistant": "offline"}},
        ]
    }
}


def test_first_candidate_with_its_environment_wins() -> None:
    offline = build_providers(CANDIDATES, env={"T_BASE": "http://x/v1"}).get("support")
    assert isinstance(offline, MockProvider) and offline.name == "support"
    online = build_providers(CANDIDATES, env={"T_BASE": "http://x/v1", "T_KEY": "k"}).get("support")
    assert isinstance(online, OpenAIProvider) and online.name == "support"
    assert online.config.base_url == "http://x/v1" and online.config.models == {
        "assistant": "gpt-4o-mini"
    }
    picked = build_providers(
        CANDIDATES, env={"T_BASE": "http://x/v1", "T_KEY": "k", "T_MODEL": "m2"}
    ).get("support")
    assert picked.config.models == {"assistant": "m2"}


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ({"a": [{"type": "openai", "requires_env": ["T_NEVER_SET"]}]}, "no candidate"),
        ({"a": {"type": "llama"}}, "must be openai or mock"),
        ({"a": {"type": "mock", "respones": {}}}, "unknown keys"),
        ({"a/b": {"type": "mock"}}, "may not"),
    ],
)
def test_bad_agent_config(agents: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_providers({"agents": agents}, env={})


async def test_mock_tool_calls_run_registered_tools(runner_factory) -> None:
    seen: list[tuple[Any, str]] = []

    async def lookup(args: Any, ctx: CallContext) -> Any:
        seen.append((args, ctx.idempotency_key))
        return {"ok": True}

    tool = FunctionTool(
        lookup,
        name="kb.search",
        args_schema={"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}},
    )
    config = {
        "mock": {
            "responses": {
                "helper": [
                    {
                        "tool_calls": [
                            {"name": "kb.search", "args": {"q": "refunds"}},
                            {"name": "kb.search", "args": {"q": 1}},
                        ]
                    },
                    {"text": "done"},
                ]
            }
        }
    }
    runner = await runner_factory(config, extra_tools=[tool])
    final, _ = await runner.run(
        "name: m\nnodes:\n  - {id: a, agent: {model: mock/helper, prompt: hi, tools: [kb.search]}}\n"
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output == {"a": {"text": "done"}}
    assert seen == [({"q": "refunds"}, f"{final.id}/a/tools/1.0")]  # the second call had bad args
    results = [e.data for e in await runner.events(final.id) if e.type == "agent.tool_result"]
    assert [r["ok"] for r in results] == [True, False]
    assert results[1]["error"]["type"] == "invalid_args"
