"""`agentrun sm create|send|get|history|events|watch` against a real server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator

import pytest

from agentrun.cli import build_parser
from agentrun.cli import machines as sm_cli
from agentrun.client import AsyncClient
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.storage.memory import MemoryStore
from tests.machines.conftest import close, make
from tests.server.conftest import STOP_GRACE

DOOR = """
name: door
mode: state_machine
initial: closed
data: {opened: 0}
states:
  closed: {on: {OPEN: {target: open, assign: {opened: "${{ data.opened + 1 }}"}}}}
  open: {on: {CLOSE: closed, BREAK: broken}}
  broken: {final: true}
"""


def _parser() -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "sm" not in subparsers.choices:  # until the lead registers it in agentrun.cli
        sm_cli.register(subparsers)
    return parser


def run_cli(*argv: str) -> tuple[int, str, str]:
    args = _parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.handler(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    h = await make(MemoryStore())
    srv = AgentrunServer(h.engine, ServerConfig.load(env={}))
    add_to_server(srv, h.machines)
    port = await srv.start("127.0.0.1:0")
    async with AsyncClient(f"127.0.0.1:{port}", api_key="") as client:
        await client.create_workflow(source=DOOR)
    yield f"127.0.0.1:{port}"
    await srv.stop(STOP_GRACE)
    await close(h)


async def test_sm_commands(server: str) -> None:
    def cli(*argv: str) -> tuple[int, str, str]:
        return run_cli(*argv, "--server", server, "--api-key", "")

    def flow() -> None:
        code, out, _ = cli("sm", "create", "door", "--request-id", "d1")
        assert code == 0
        ident = out.strip()
        assert cli("sm", "create", "door", "--request-id", "d1")[1].strip() == ident
        code, out, _ = cli("sm", "send", ident, "OPEN", "--id", "o1")
        assert code == 0 and "closed -> open" in out
        code, out, _ = cli("sm", "events", ident)
        assert out.split() == ["BREAK", "CLOSE"]
        code, out, err = cli("sm", "send", ident, "OPEN", "--json")
        assert code == 2 and json.loads(out)["error"]["accepted_events"] == ["BREAK", "CLOSE"]
        code, out, _ = cli("sm", "get", ident, "--json")
        got = json.loads(out)
        assert (got["current_state"], got["data"], got["state"]) == (
            "open",
            {"opened": 1},
            "STATE_ACTIVE",
        )
        code, out, _ = cli("sm", "send", ident, "BREAK")
        assert code == 0
        code, out, _ = cli("sm", "history", ident)
        assert [line.split()[2] for line in out.splitlines()] == ["create", "OPEN", "OPEN", "BREAK"]
        code, out, _ = cli("sm", "watch", ident, "--after", "2")
        assert code == 0 and "(COMPLETED)" in out.splitlines()[-1]
        code, _, err = cli("sm", "get", "missing")
        assert code == 1 and "not_found" in err

    await asyncio.to_thread(flow)


def test_help_lists_the_actions() -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        _parser().parse_args(["sm", "--help"])
    for action in ("create", "send", "get", "history", "events", "watch"):
        assert action in out.getvalue()
