"""examples/support_agent_workflow.yaml: offline with the mock provider, and unchanged against an
OpenAI-compatible endpoint (a local chat-completions server) once OPENAI_BASE_URL/OPENAI_API_KEY
are set; both through the `agentrun run` command line the example documents."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from agentrun.cli import main
from agentrun.storage.records import ExecutionState

from .chatserver import ChatServer
from .conftest import make_engine

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "support_agent_workflow.yaml"
CONFIG = ROOT / "examples" / "support_agent_config.yaml"


def documented_command() -> list[str]:
    lines = [
        ln.lstrip("#").strip() for ln in WORKFLOW.read_text().splitlines() if ln.startswith("#")
    ]
    start = next(i for i, ln in enumerate(lines) if "agentrun run " in ln)
    text = ""
    for ln in lines[start:]:
        text += ln.removesuffix("\\") + " "
        if not ln.endswith("\\"):
            break
    argv = shlex.split(text)
    return argv[argv.index("run") :]


async def run_cli(argv: list[str], capsys: Any, monkeypatch: Any) -> dict[str, Any]:
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    code = await asyncio.to_thread(main, [*argv, "--json", "--memory"])
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert code == 0, (body, err)
    return body


async def test_offline_with_the_mock_provider(monkeypatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    body = await run_cli(documented_command(), capsys, monkeypatch)
    assert body["execution"]["state"] == "STATE_SUCCEEDED"
    output = body["execution"]["output"]
    assert output["order_status"] == "shipped" and output["escalated"] is False
    assert _nodes(body)["open_ticket"]["state"] == "STATE_SKIPPED"
    # The mock's tool call really ran sql.query.
    config = yaml.safe_load(CONFIG.read_text())
    engine = await make_engine(config)
    try:
        from agentrun.engine import load_workflow

        spec = load_workflow(WORKFLOW.read_text())
        await engine.create_workflow(spec)
        ex = await engine.start_execution(
            spec.name, {"message": "Where is it?", "order_id": "A-1001"}
        )
        final = await engine.wait(ex.id, timeout=10)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        results = [e.data for e in await engine.list_events(ex.id) if e.type == "agent.tool_result"]
        assert results == [{"turn": 1, "index": 0, "tool": "sql.query", "ok": True}]
    finally:
        await engine.stop(grace=0)


def model_following_the_prompt(server: ChatServer) -> list[dict[str, Any]]:
    """What a model does with the example's prompt: call sql.query as told, then answer."""
    return [
        {"tool_calls": [{"name": "sql_query", "arguments": "PLACEHOLDER"}]},
        {
            "content": json.dumps(
                {
                    "reply": "Sorry, order A-1002 is delayed; a colleague will follow up.",
                    "order_status": "delayed",
                    "escalate": True,
                }
            )
        },
    ]


async def test_unchanged_against_an_openai_compatible_endpoint(monkeypatch, capsys) -> None:
    async with ChatServer() as server:
        server.script = model_following_the_prompt(server)
        # The tool call's arguments are what the system prompt tells the model to send.
        system = yaml.safe_load(WORKFLOW.read_text())["nodes"][0]["agent"]["system"]
        query = re.search(r"^WITH orders.*$", system, re.MULTILINE).group(0)
        server.script[0]["tool_calls"][0]["arguments"] = json.dumps(
            {"database": "orders", "query": query, "params": {"id": "A-1002"}}
        )
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test-key")
        monkeypatch.setenv("OPENAI_MODEL", "gpt-local")
        argv = documented_command()
        argv[argv.index("--input") + 1] = json.dumps(
            {"message": "Where is my monitor?!", "order_id": "A-1002"}
        )
        body = await run_cli(argv, capsys, monkeypatch)
    assert body["execution"]["state"] == "STATE_SUCCEEDED", body
    assert body["execution"]["output"] == {
        "reply": "Sorry, order A-1002 is delayed; a colleague will follow up.",
        "order_status": "delayed",
        "escalated": True,
    }
    assert _nodes(body)["open_ticket"]["state"] == "STATE_SUCCEEDED"
    first, second = server.bodies
    assert first["model"] == "gpt-local" and first["temperature"] == 0
    assert [t["function"]["name"] for t in first["tools"]] == ["sql_query"]
    assert first["response_format"]["type"] == "json_schema"
    assert server.requests[0].headers["authorization"] == "Bearer sk-local-test-key"
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {
        "rows": [{"id": "A-1002", "status": "delayed", "items": "1 monitor", "eta": None}],
        "rowcount": 1,
    }


def _nodes(body: dict) -> dict[str, dict]:
    """`run --json` lists the nodes in the workflow's order; by node id here."""
    return {node["node_id"]: node for node in body["nodes"]}
