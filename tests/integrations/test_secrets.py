"""Secrets from config, environment and files; and the canary: a secret that tools, a model and
errors leak on purpose never reaches stored outputs, errors, events, the bus or the logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.integrations import attach, load_secrets
from agentrun.integrations.secrets import SecretsError
from agentrun.storage.records import ExecutionState

from .chatserver import ChatServer
from .httpserver import HttpServer, Request, Response

CANARY = "canary-7f3a9c2e51d4b6"


def test_sources_and_precedence(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text("a: from-file\nb: from-file\nc: from-file\n")
    (tmp_path / "one").write_text("pw-from-file\n")
    env = {
        "AGENTRUN_SECRET_B": "from-prefix",
        "AGENTRUN_SECRET_C": "from-prefix",
        "MY_TOKEN": "tok",
        "AGENTRUN_SECRETS_FILE": str(tmp_path / "s.yaml"),
    }
    config = {
        "secrets": {
            "c": "literal",
            "token": {"env": "MY_TOKEN"},
            "pw": {"file": str(tmp_path / "one")},
            "maybe": {"env": "UNSET_VARIABLE_X", "optional": True},
        }
    }
    got = load_secrets(config, env=env)
    assert got == {
        "a": "from-file",
        "b": "from-file",
        "B": "from-prefix",
        "C": "from-prefix",
        "c": "literal",
        "token": "tok",
        "pw": "pw-from-file",
    }
    (tmp_path / "s.json").write_text(json.dumps({"k": "v"}))
    assert load_secrets({"secrets_file": str(tmp_path / "s.json")}, env={}) == {"k": "v"}


def test_errors_name_the_problem_never_the_value(tmp_path) -> None:
    with pytest.raises(SecretsError, match="UNSET_VARIABLE_Y"):
        load_secrets({"secrets": {"t": {"env": "UNSET_VARIABLE_Y"}}}, env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"key: [{CANARY}\n")
    with pytest.raises(SecretsError) as err:
        load_secrets({"secrets_file": str(bad)}, env={})
    assert CANARY not in str(err.value)
    with pytest.raises(SecretsError, match="secrets.x"):
        load_secrets({"secrets": {"x": {"vault": "path"}}}, env={})


class Leak(Tool):
    """Leaks the secret it is given into its result, its logs, or its failure."""

    name = "test.leak"

    async def call(self, args: Any, ctx: CallContext) -> Any:
        secret = args["secret"]
        logging.getLogger("thirdparty.client").warning("connecting with key=%s", secret)
        mode = args["mode"]
        if mode == "fail":
            raise ToolFailure(
                "tool_error",
                f"auth failed for {secret}",
                details={"key": secret, "nested": [secret]},
            )
        if mode == "crash":
            raise RuntimeError(f"unexpected: {secret}")
        if mode == "emit":
            ctx.emit("tool.note", {"said": f"the key is {secret}"})
        return {"echo": secret, "list": [f"k={secret}"], secret: "as a key"}


WORKFLOW = """
name: canary
error_handlers:
  - {match: {nodes: fail}, action: skip, output: {}}
nodes:
  - {id: out, tool: {name: test.leak, args: {secret: "${{ secrets.canary }}", mode: ok}}}
  - {id: emit, tool: {name: test.leak, args: {secret: "${{ secrets.canary }}", mode: emit}}}
  - id: http
    tool:
      name: http.request
      args: {url: "${{ input.url + '/echo?token=' + secrets.canary }}", headers: {Authorization: "Bearer ${{ secrets.canary }}"}}
  - id: sql
    tool: {name: sql.query, args: {query: "SELECT :s AS s", params: {s: "${{ secrets.canary }}"}}}
  - id: model
    agent: {model: openai/gpt-test, prompt: "Repeat ${{ secrets.canary }}"}
  - {id: fail, needs: [out, emit, http, sql, model], retry: {max_attempts: 2, initial_interval: 1ms},
     tool: {name: test.leak, args: {secret: "${{ secrets.canary }}", mode: fail}}}
  - {id: crash, needs: [fail], tool: {name: test.leak, args: {secret: "${{ secrets.canary }}", mode: crash}}}
"""


async def test_secret_canary_has_zero_hits(runner_factory, caplog, tmp_path) -> None:
    async def echo(request: Request) -> Response:
        return Response.json({"query": request.query, "auth": request.headers.get("authorization")})

    caplog.set_level(logging.DEBUG)
    async with (
        HttpServer(echo) as http,
        ChatServer([{"content": f"Sure: {CANARY}!"}], piece=3, pause=0.06) as chat,
    ):
        config = {
            "tools": {
                "http.request": {"allow": [f"127.0.0.1:{http.port}"]},
                "sql.query": {"databases": {"main": {"url": f"sqlite:///{tmp_path / 'c.db'}"}}},
            },
            "openai": {"base_url": chat.base_url},
            "events": {"bus": "memory"},
        }
        runner = await runner_factory(config, extra_tools=[Leak()], secrets={"canary": CANARY})
        publisher = await attach(runner.engine, config)
        final, nodes = await runner.run(WORKFLOW, {"url": http.url})
        await publisher.drained()
        # The calls really carried the secret where it was meant to go...
        assert http.requests[0].headers["authorization"] == f"Bearer {CANARY}"
        assert CANARY in chat.bodies[0]["messages"][0]["content"]
        # ...and the stored run only masks.
        assert final.state is ExecutionState.FAILED
        for node in ("out", "http", "sql", "model"):
            assert nodes[node].state.value == "SUCCEEDED", (node, nodes[node].error)
        events = await runner.events(final.id)
        bus_events = [e.to_json().decode() for e in publisher.bus.events]
        await publisher.stop()
    logs = caplog.text + "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "connecting with key=" in logs and "unexpected: " in logs  # the leaks did happen
    haystacks = {
        "execution": repr(final),
        "nodes": repr(list(nodes.values())),
        "events": repr(events),
        "bus": "\n".join(bus_events),
        "logs": logs,
        # Streamed pieces joined: a secret split across delta events must not reassemble.
        "stream": "".join(e.data["text"] for e in events if e.type == "agent.delta"),
    }
    hits = {name: text.count(CANARY) for name, text in haystacks.items()}
    print(f"secret canary hits: {hits}")
    assert hits == dict.fromkeys(haystacks, 0)
    assert "[REDACTED]" in repr(nodes["out"].output) and "[REDACTED]" in repr(events)
    assert nodes["crash"].error["type"] == "internal"
    assert len([e for e in events if e.type == "agent.delta"]) > 3
    assert haystacks["stream"] == "Sure: [REDACTED]!"
    assert len(bus_events) == len(events)
