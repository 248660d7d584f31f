"""The server commands against a real in-process server (DAGs and state machines):
`executions list|get`, `sm list|get`, `start` on a state machine, `watch` lines, `--json`
shapes, errors for an unreachable server and for a missing API key.

The CLI's client is synchronous: each command runs through `agentrun.cli.main` in a worker
thread while the server serves on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.cli import main
from agentrun.client import AsyncClient, ExecutionState, NodeState
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.storage.memory import MemoryStore
from tests.machines.conftest import close, make
from tests.server.conftest import STOP_GRACE

DOOR = """
name: door
mode: state_machine
initial: closed
data: {opened: 0, label: "front door"}
states:
  closed: {on: {OPEN: {target: open, assign: {opened: "${{ data.opened + 1 }}"}}}}
  open: {on: {CLOSE: closed, BREAK: broken}}
  broken: {final: true}
"""

GATED = """
name: gated
nodes:
  - {id: big, pass: {value: 1}}
  - {id: approve, needs: [big], wait: {signal: approval}}
  - {id: after, needs: [approve], pass: {value: "${{ nodes.approve.output }}"}}
output: "${{ nodes.after.output }}"
"""

LONG = """
name: long
nodes:
  - {id: words, pass: {value: "${{ input.text }}"}}
"""

QUICK = """
name: quick
nodes:
  - {id: one, pass: {value: 1}}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def served(env: dict[str, str]) -> tuple[Any, AgentrunServer, str]:
    h = await make(MemoryStore())
    srv = AgentrunServer(h.engine, ServerConfig.load(env=env))
    add_to_server(srv, h.machines)
    port = await srv.start("127.0.0.1:0")
    return h, srv, f"127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, AsyncClient]]:
    h, srv, address = await served({})
    try:
        async with AsyncClient(address, api_key="") as client:
            for source in (DOOR, GATED, LONG, QUICK):
                await client.create_workflow(source=source)
            yield address, client
    finally:
        await srv.stop(STOP_GRACE)
        await close(h)


async def cli(address: str, *argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run, *argv, "--server", address, "--api-key", "")


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _waiting(client: AsyncClient, execution_id: str) -> None:
    async def check() -> bool:
        return (await client.get_execution(execution_id)).state is ExecutionState.WAITING

    await _until(check)


# ------------------------------------------------------------ every node, PENDING if unreached


async def test_get_execution_lists_every_node_over_grpc_and_cli(server) -> None:
    address, client = server
    execution = await client.start_execution("gated")
    await _waiting(client, execution.id)

    got = await client.get_execution(execution.id, include_nodes=True)
    assert [(n.node_id, n.state) for n in got.nodes] == [
        ("big", NodeState.SUCCEEDED),
        ("approve", NodeState.WAITING),
        ("after", NodeState.PENDING),
    ]

    code, out, err = await cli(address, "executions", "get", execution.id, "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["execution"]["name"] == execution.name
    assert body["execution"]["state"] == "STATE_WAITING"
    assert [(n["node_id"], n["state"]) for n in body["nodes"]] == [
        ("big", "STATE_SUCCEEDED"),
        ("approve", "STATE_WAITING"),
        ("after", "STATE_PENDING"),
    ]
    code, out, _ = await cli(address, "executions", "get", execution.id)
    assert code == 0 and re.search(r"after\s+PENDING", out), out


# ------------------------------------------------------------ executions list


async def test_executions_list_filters_and_pages(server) -> None:
    address, client = server
    done = [await client.start_execution("quick") for _ in range(3)]
    for execution in done:
        await client.wait(execution, timeout=20)
    waiting = await client.start_execution("gated")
    await _waiting(client, waiting.id)

    code, out, err = await cli(address, "executions", "list", "--workflow", "quick", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert [e["name"] for e in body["executions"]] == [e.name for e in done]
    assert {e["state"] for e in body["executions"]} == {"STATE_SUCCEEDED"}
    assert "next_page_token" not in body  # the last page has none (default left out)

    code, out, _ = await cli(address, "executions", "list", "--state", "waiting")
    assert code == 0 and out.split()[0] == waiting.id and "WAITING" in out
    assert len(out.splitlines()) == 1

    # One page of two, its token on stderr; the next page has the rest.
    code, out, err = await cli(
        address, "executions", "list", "--workflow", "quick", "--page-size", "2"
    )
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [e.id for e in done[:2]]
    token = re.search(r"--page-token (\S+)", err).group(1)
    code, out, err = await cli(
        address,
        "executions",
        "list",
        "--workflow",
        "quick",
        "--page-size",
        "2",
        "--page-token",
        token,
    )
    assert [line.split()[0] for line in out.splitlines()] == [done[2].id] and err == ""
    code, out, _ = await cli(
        address, "executions", "list", "--workflow", "quick", "--page-size", "1", "--all"
    )
    assert [line.split()[0] for line in out.splitlines()] == [e.id for e in done]

    code, out, _ = await cli(address, "executions", "list", "--state", "STATE_WAITING", "--json")
    assert [e["name"] for e in json.loads(out)["executions"]] == [waiting.name]
    code, _, err = await cli(address, "executions", "list", "--state", "sleepy")
    assert code == 2 and "--state SLEEPY: expected one of" in err and "RUNNING" in err


async def test_executions_list_newest_first_and_by_creation_time(server) -> None:
    """The CLI's --newest-first, --created-after and --created-before, and the SDK's
    list_executions, are ListExecutions' order and window, followed across pages."""
    address, client = server
    done = [await client.start_execution("quick") for _ in range(4)]
    ids = [e.id for e in done]
    code, out, err = await cli(
        address,
        "executions",
        "list",
        "--workflow",
        "quick",
        "--newest-first",
        "--page-size",
        "3",
        "--all",
    )
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ids[::-1]
    # The window from the second execution's creation to the fourth's: the 2nd and 3rd.
    after, before = done[1].create_time, done[3].create_time
    code, out, err = await cli(
        address,
        "executions",
        "list",
        "--workflow",
        "quick",
        "--newest-first",
        "--all",
        "--page-size",
        "1",
        "--created-after",
        after.isoformat(),
        "--created-before",
        before.isoformat(),
    )
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == [ids[2], ids[1]]
    listed = [
        e.id
        async for e in client.list_executions(
            workflow="quick",
            created_after=after,
            created_before=before,
            newest_first=True,
            page_size=1,
        )
    ]
    assert listed == [ids[2], ids[1]]
    assert [
        e.id async for e in client.list_executions(workflow="quick", created_after=after)
    ] == ids[1:]
    code, _, err = await cli(address, "executions", "list", "--created-after", "yesterday")
    assert code == 2 and "--created-after yesterday: expected an ISO 8601 time" in err


# ------------------------------------------------------------ --json: one shape


async def test_json_outputs_share_the_protobuf_mapping(server) -> None:
    address, client = server
    code, out, err = await cli(address, "start", "quick", "--json")
    assert code == 0, err
    started = json.loads(out)
    await client.wait(started["name"], timeout=20)
    code, out, _ = await cli(address, "watch", started["name"].split("/")[1], "--json")
    events = [json.loads(line) for line in out.splitlines()]
    code, out, _ = await cli(address, "executions", "get", started["name"], "--json")
    got = json.loads(out)["execution"]
    code, out, _ = await cli(address, "sm", "create", "door", "--json")
    instance = json.loads(out)
    code, out, _ = await cli(address, "trace", started["name"], "--json")
    trace = json.loads(out)
    states = [started["state"], got["state"], instance["state"], trace["execution"]["state"]]
    assert all(s.startswith("STATE_") for s in states), states
    times = [
        started["create_time"],
        got["end_time"],
        events[-1]["time"],
        instance["create_time"],
        trace["nodes"][0]["end_time"],
    ]
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
    assert all(rfc3339.match(t) for t in times), times
    # A workflow's spec keeps the file's words (`pass`, not the proto field `pass_node`).
    code, out, _ = await cli(address, "workflows", "get", "quick", "--json")
    assert json.loads(out)["spec"]["nodes"] == [{"id": "one", "pass": {"value": 1}}]


# ------------------------------------------------------------ watch lines


async def test_watch_shows_signal_names_and_marks_cut_output(server) -> None:
    address, client = server
    execution = await client.start_execution("gated")
    await _waiting(client, execution.id)
    await client.signal_execution(execution, "approval", {"by": "alice"})
    await client.wait(execution, timeout=20)
    code, out, err = await cli(address, "watch", execution.id)
    assert code == 0, err
    line = next(line for line in out.splitlines() if "signal.received" in line)
    assert line.endswith('signal.received approval {"by":"alice"}'), line

    text = "word " * 100
    execution = await client.start_execution("long", {"text": text})
    await client.wait(execution, timeout=20)
    code, out, _ = await cli(address, "watch", execution.id)
    line = next(line for line in out.splitlines() if "node.succeeded words" in line)
    assert line.endswith("…") and len(line) < 200, line
    event_lines = "\n".join(line for line in out.splitlines() if " #" in line)
    assert text.strip() not in event_lines  # cut, not printed whole
    assert (
        out.splitlines()[-1].startswith("SUCCEEDED") and text in out.splitlines()[-1]
    )  # the result: whole


# ------------------------------------------------------------ state machines


async def test_sm_list_and_get_print_json_data(server) -> None:
    address, _client = server
    ids = []
    for _ in range(2):
        code, out, err = await cli(address, "sm", "create", "door")
        assert code == 0, err
        ids.append(out.strip())
    code, _, err = await cli(address, "sm", "send", ids[0], "OPEN")
    assert code == 0, err

    code, out, err = await cli(address, "sm", "list")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ids
    code, out, _ = await cli(address, "sm", "list", "--current-state", "open", "--json")
    assert [i["name"] for i in json.loads(out)["instances"]] == [f"instances/{ids[0]}"]
    code, out, _ = await cli(address, "sm", "list", "--state", "completed")
    assert code == 0 and out == ""
    code, _, err = await cli(address, "sm", "list", "--state", "sleepy")
    assert code == 2 and "--state" in err

    code, out, _ = await cli(address, "sm", "get", ids[0])
    data_line = next(line for line in out.splitlines() if line.strip().startswith("data:"))
    assert json.loads(data_line.split("data:", 1)[1]) == {"label": "front door", "opened": 1}


async def test_start_on_a_state_machine_points_to_sm_create(server) -> None:
    address, _ = server
    code, out, err = await cli(address, "start", "door")
    assert code == 2 and out == ""
    assert "state machine" in err and "agentrun sm create door" in err


# ------------------------------------------------------------ setup errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "argv",
    [
        ("workflows", "list"),
        ("executions", "list"),
        ("sm", "list"),
        ("trace", "x"),
        ("start", "x"),
        ("watch", "x"),
    ],
)
def test_an_unreachable_server_is_one_line_with_its_address(argv, monkeypatch) -> None:
    from agentrun.client import Client

    def no_watch(*args: object, **kwargs: object) -> None:
        raise AssertionError("the stream was opened: it reconnects for half a minute first")

    # `watch` says it at once, from a plain call, not after the stream's reconnects.
    monkeypatch.setattr(Client, "watch", no_watch)
    address = f"127.0.0.1:{_free_port()}"
    code, out, err = run(*argv, "--server", address)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1, err
    assert f"cannot reach an agentrun server at {address}" in err and "--server" in err


async def test_auth_errors_mention_api_key() -> None:
    h, srv, address = await served({"AGENTRUN_API_KEYS": "sesame:acme"})
    try:
        for key in ("", "wrong"):
            code, _, err = await asyncio.to_thread(
                run, "workflows", "list", "--server", address, "--api-key", key
            )
            assert code == 1 and "unauthenticated" in err and "--api-key" in err, err
            assert len(err.splitlines()) == 1
        code, _, err = await asyncio.to_thread(
            run, "workflows", "list", "--server", address, "--api-key", "sesame"
        )
        assert code == 0, err
    finally:
        await srv.stop(STOP_GRACE)
        await close(h)


# ------------------------------------------------------------ start --wait


async def test_start_wait_prints_the_final_state_and_output(server) -> None:
    address, client = server
    code, out, err = await cli(address, "start", "quick", "--wait")
    assert code == 0, err
    execution_id, final = out.splitlines()
    assert final == 'SUCCEEDED {"one": 1}'
    assert (await client.get_execution(execution_id)).state is ExecutionState.SUCCEEDED
    code, out, _ = await cli(address, "start", "quick", "--wait", "--json")
    assert code == 0 and json.loads(out)["state"] == "STATE_SUCCEEDED"


async def test_start_wait_past_its_deadline_says_it_still_runs(server) -> None:
    address, client = server
    code, out, err = await cli(address, "start", "gated", "--wait", "--wait-timeout", "300ms")
    assert code == 1
    execution_id = out.strip()
    assert f"agentrun watch {execution_id}" in err and "WAITING" in err
    assert (await client.get_execution(execution_id)).state is ExecutionState.WAITING


async def test_start_wait_timeout_is_checked(server) -> None:
    address, _ = server
    code, _, err = await cli(address, "start", "quick", "--wait-timeout", "5s")
    assert code == 2 and "--wait-timeout goes with --wait" in err
    code, _, err = await cli(address, "start", "quick", "--wait", "--wait-timeout", "soon")
    assert code == 2 and "--wait-timeout" in err
    code, _, err = await cli(address, "start", "quick", "--wait", "--wait-timeout", "10m")
    assert code == 2 and "wait_timeout" in err
