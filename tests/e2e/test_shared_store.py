"""`agentrun serve` and `agentrun run` on one SQLite store at once (issue 12, item 1).

Real processes on one directory: each keeps the leases of what it runs, a signal sent through
the server reaches an execution that `run` runs, a `run` interrupted mid-way leaves its
execution to the server, and a second server on a busy port stops before it opens the store.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentrun.client import Client, ExecutionState
from tests.server.subprocess_server import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(180)

LEASE = 3.0  # seconds: short, so a dead `run`'s lease expires soon; renewed every second
CONFIG = f"lease: {LEASE}s\n"

# Sleeping steps: long enough that both processes have executions running at the same time.
WORK = """\
name: {name}
nodes:
  - {{id: a, retry: {{max_attempts: 3, initial_interval: 10ms}}, tool: {{name: core.sleep, args: {{seconds: {s}}}}}}}
  - {{id: b, needs: [a], retry: {{max_attempts: 3, initial_interval: 10ms}}, tool: {{name: core.sleep, args: {{seconds: {s}}}}}}}
  - {{id: c, needs: [b], retry: {{max_attempts: 3, initial_interval: 10ms}}, tool: {{name: core.sleep, args: {{seconds: {s}}}}}}}
  - {{id: d, needs: [c], retry: {{max_attempts: 3, initial_interval: 10ms}}, tool: {{name: core.sleep, args: {{seconds: {s}}}}}}}
"""
# Waits for a signal; the timeout (shorter than what `run` calls stuck) keeps `run` watching.
HOLD = """\
name: {name}
nodes:
  - {{id: w, wait: {{signal: go, timeout: 50s}}}}
  - {{id: after, needs: [w], tool: {{name: core.echo, args: {{got: "${{{{ nodes.w.output }}}}"}}}}}}
"""

# A step, then a wait for a signal, then a step: interrupted while it waits.
INTERRUPTED = """\
name: {name}
nodes:
  - {{id: a, tool: {{name: core.sleep, args: {{seconds: 0.2}}}}}}
  - {{id: w, needs: [a], wait: {{signal: go, timeout: 50s}}}}
  - {{id: b, needs: [w], tool: {{name: core.echo, args: {{got: "${{{{ nodes.w.output }}}}"}}}}}}
"""


def until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class RunProcess:
    """`agentrun run FILE --json` in the shared directory."""

    def __init__(self, workdir: Path, path: Path) -> None:
        self.log = workdir / f"{path.stem}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONFAULTHANDLER"] = "1"
        command = [
            sys.executable,
            "-c",
            # Ctrl-C reaches `run` as in a terminal. A suite started in the background by a
            # non-interactive shell (as CI may start it) ignores SIGINT, children inherit
            # that, and `run` would rightly ignore the test's Ctrl-C.
            (
                "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "from agentrun.cli import main; sys.exit(main())"
            ),
            "run",
            str(path),
            "--json",
            "--config",
            str(workdir / "config.yaml"),
            "--db",
            f"sqlite:///{workdir / 'agentrun.db'}",
            "--progress",
            "never",
        ]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def result(self, timeout: float = 120.0) -> tuple[int, dict[str, object]]:
        out, _ = self.proc.communicate(timeout=timeout)
        result = json.loads(out or b"{}")
        result.setdefault("stderr", self.log.read_text(errors="replace")[-3000:])
        return self.proc.returncode, result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[ServerProcess, Callable[[str, str], RunProcess]]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    server = ServerProcess(tmp_path, args=["--config", str(tmp_path / "config.yaml")]).start()
    runs: list[RunProcess] = []

    def run(name: str, text: str) -> RunProcess:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        runs.append(RunProcess(tmp_path, path))
        return runs[-1]

    try:
        yield server, run
    finally:
        for process in runs:
            process.stop()
        server.stop()


def state_of(result: dict[str, object]) -> str:
    """The execution state in `run --json` output (either shape: the proto's, or flat)."""
    execution = result.get("execution") or result
    return str(execution.get("state", "")).removeprefix("STATE_")  # type: ignore[union-attr]


def leases(workdir: Path) -> dict[str, tuple[str, int, str]]:
    """execution id -> (owner, lease epoch, workflow), read from the file both processes share."""
    with sqlite3.connect(workdir / "agentrun.db") as db:
        rows = db.execute("SELECT id, owner, lease_epoch, workflow FROM executions").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def execution_of(client: Client, workflow: str) -> str:
    """The id of the one execution of `workflow` (started by a `run`), once it exists."""
    found = until(
        lambda: list(client.list_executions(workflow=workflow)), f"an execution of {workflow}"
    )
    return found[0].id  # type: ignore[index]


def test_serve_and_run_share_one_store(shared, tmp_path: Path) -> None:
    server, run = shared
    with Client(server.address) as client:
        client.create_workflow(source=WORK.format(name="work", s=0.6))
        client.create_workflow(source=HOLD.format(name="hold"))
        working = [client.start_execution("work", {}) for _ in range(3)]
        holding = [client.start_execution("hold", {}) for _ in range(2)]
        until(
            lambda: all(client.get_execution(h).state is ExecutionState.WAITING for h in holding),
            "the server's executions to wait",
        )
        # Started while the server runs and waits; each `run` starts one of its own.
        run_work = run("runwork", WORK.format(name="runwork", s=0.6))
        run_hold = run("runhold", HOLD.format(name="runhold"))
        waiting = execution_of(client, "runhold")
        until(
            lambda: client.get_execution(waiting).state is ExecutionState.WAITING,
            "the run's execution to wait",
        )
        # More work on the server while both runs are alive.
        working += [client.start_execution("work", {}) for _ in range(2)]
        for execution in holding:
            client.signal_execution(execution, "go", {"from": "server"})
        # Through the server, to the execution the `run` process runs.
        client.signal_execution(waiting, "go", {"from": "client"})
        finals = [client.wait(e, timeout=90) for e in working + holding]
        assert [f.state for f in finals] == [ExecutionState.SUCCEEDED] * len(finals)

    code, result = run_hold.result()
    assert (code, state_of(result)) == (0, "SUCCEEDED"), result
    printed = json.dumps({k: v for k, v in result.items() if k != "stderr"})
    assert '"from": "client"' in printed, result  # the signal sent through the server was taken
    code, result = run_work.result()
    assert (code, state_of(result)) == (0, "SUCCEEDED"), result

    # No lease changed hands: every execution was claimed once, by the process that started it.
    table = leases(tmp_path)
    assert len(table) == 9
    for execution_id, (owner, epoch, workflow) in table.items():
        assert epoch == 1, (
            f"{execution_id} ({workflow}) was claimed again: epoch {epoch}, owner {owner}"
        )
        assert owner.startswith("run-") == workflow.startswith("run"), (
            execution_id,
            owner,
            workflow,
        )
    owners = {owner for owner, _, workflow in table.values() if workflow.startswith("run")}
    assert len(owners) == 2  # each run its own replica id
    for log in (server.log, run_work.log, run_hold.log):
        assert "lease" not in log.read_text().lower(), log.read_text()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_a_live_server_takes_over_an_interrupted_run(shared, tmp_path: Path, how: int) -> None:
    server, run = shared
    # After its first step the run waits for a signal: it cannot have finished by the time it
    # is interrupted, however slow the machine is to notice the step.
    process = run("runwork", INTERRUPTED.format(name="runwork"))
    with Client(server.address) as client:
        execution = execution_of(client, "runwork")
        until(
            lambda: client.get_execution(execution).state is ExecutionState.WAITING,
            "the run's first step",
        )
        process.proc.send_signal(how)
        try:
            process.proc.wait(30)
        except subprocess.TimeoutExpired:
            # Seen under heavy load: `run` did not end after Ctrl-C. Its threads' stacks
            # (faulthandler, on in RunProcess) say where it waits.
            process.proc.send_signal(signal.SIGABRT)
            process.proc.wait(30)
            raise AssertionError(
                "run did not exit 30 s after the signal; its stacks:\n"
                + process.log.read_text(errors="replace")[-6000:]
            ) from None
        assert client.get_execution(execution).state is not ExecutionState.SUCCEEDED
        client.signal_execution(execution, "go", {"after": "the run stopped"})
        final = client.wait(execution, timeout=60)
    assert final.state is ExecutionState.SUCCEEDED
    owner, epoch, _ = leases(tmp_path)[execution]
    assert (owner, epoch) == ("local", 2)  # the server's default replica id, one claim later


def test_a_second_server_on_a_busy_port_stops_before_the_store(shared, tmp_path: Path) -> None:
    server, _ = shared
    fresh = tmp_path / "second"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from agentrun.cli import main; sys.exit(main())",
            "serve",
            "--listen",
            server.address,
            "--db",
            f"sqlite:///{fresh / 'db' / 'agentrun.db'}",
        ],
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"agentrun: {server.address} is already in use (another agentrun serve?)"], (
        result.stderr
    )
    assert not (fresh / "db").exists()  # the store was never opened
    assert server.health() is not None  # the first server is untouched
