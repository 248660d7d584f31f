"""kill -9 the server while a state's timer is pending; after a restart the timer fires (late,
at once) and the instance moves on. Timers are store rows, not sleeping coroutines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentrun.client import Client
from agentrun.client.machines import InstanceState, MachinesClient

# Two server starts per test: each may take tens of seconds on a busy machine, more than the
# suite's default 60 s for the whole test.
pytestmark = pytest.mark.timeout(180)

DRIVER = Path(__file__).with_name("server_driver.py")

MACHINE = """
name: expiring
mode: state_machine
initial: pending
states:
  pending:
    on: {PAY: paid}
    after: {2s: {target: expired, assign: {expired: true}}}
  paid: {on: {SHIP: shipped}}
  shipped: {final: true}
  expired: {final: true}
"""


def start_driver(
    *args: Path | str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """server_driver.py with `args` in a child process, and the port it serves on."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("port "), line
    return proc, int(line.split()[1])


def test_timer_fires_after_kill_9_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "agentrun.db"
    proc, port = start_driver(db)
    try:
        with Client(f"127.0.0.1:{port}", api_key="") as client:
            client.create_workflow(source=MACHINE)
            sm = MachinesClient(client)
            doomed = sm.create_instance("expiring", request_id="a")
            paid = sm.create_instance("expiring", request_id="b")
            _, first = sm.send_event(
                paid, "PAY", event_id="pay-b"
            )  # left `pending`: its timer is cancelled
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(2.5)  # the timer is due while no server runs

    proc, port = start_driver(db)
    try:
        with Client(f"127.0.0.1:{port}", api_key="") as client:
            sm = MachinesClient(client)
            final = sm.wait(doomed.id, timeout=20)
            assert (final.state, final.current_state, final.data) == (
                InstanceState.COMPLETED,
                "expired",
                {"expired": True},
            )
            last = list(sm.history(doomed.id))[-1]
            assert (last.event, last.from_state, last.to_state) == (
                "after:2s",
                "pending",
                "expired",
            )
            other = sm.get_instance(paid.id)
            assert (other.state, other.current_state) == (InstanceState.ACTIVE, "paid")
            # An event id applied before the kill is still applied once.
            _, again = sm.send_event(paid.id, "PAY", event_id="pay-b")
            assert again.sequence == first.sequence
            assert len(list(sm.history(paid.id))) == 2
    finally:
        proc.kill()
        proc.wait(10)


def test_timer_fires_after_kill_9_of_agentrun_serve(tmp_path: Path) -> None:
    """The same, with the real `agentrun serve` (StateMachineService wired in by serve)."""
    from tests.server.subprocess_server import ServerProcess

    first = ServerProcess(tmp_path).start()
    try:
        with Client(first.address, api_key="") as client:
            client.create_workflow(source=MACHINE)
            sm = MachinesClient(client)
            doomed = sm.create_instance("expiring", request_id="a")
            assert sm.available_events(doomed) == ["PAY"]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    time.sleep(2.5)
    second = ServerProcess(tmp_path).start()
    try:
        with Client(second.address, api_key="") as client:
            final = MachinesClient(client).wait(doomed.id, timeout=20)
            assert (final.state, final.current_state) == (InstanceState.COMPLETED, "expired")
    finally:
        second.stop()
