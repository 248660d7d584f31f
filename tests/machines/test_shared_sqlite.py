"""Two server processes on one SQLite file: an instance driven through one is watched through
the other, every entry once and in order, and the stream ends with the instance. SQLite has no
NOTIFY: the other process learns of new history entries by polling the history table, as it
does for execution events (issue 14: it read the events and signals tables only)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agentrun.client import Client
from agentrun.client.machines import InstanceState, MachinesClient
from tests.machines.test_kill_restart import start_driver

pytestmark = pytest.mark.timeout(120)

MACHINE = """
name: order
mode: state_machine
initial: pending
states:
  pending: {on: {PAY: paid}}
  paid: {on: {SHIP: shipped}}
  shipped: {final: true}
"""


def test_watch_through_another_process_sees_every_entry_and_ends(tmp_path: Path) -> None:
    db = tmp_path / "agentrun.db"
    driver, driver_port = start_driver(db)
    watcher, watcher_port = start_driver(db)
    seen: list[Any] = []
    ended = threading.Event()
    try:
        with (
            Client(f"127.0.0.1:{driver_port}", api_key="") as a,
            Client(f"127.0.0.1:{watcher_port}", api_key="") as b,
        ):
            a.create_workflow(source=MACHINE)
            sm_a, sm_b = MachinesClient(a), MachinesClient(b)
            inst = sm_a.create_instance("order")
            first = threading.Event()

            def watch() -> None:
                for entry in sm_b.watch(inst.id, timeout=60):
                    seen.append(entry)
                    first.set()
                ended.set()

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            assert first.wait(30), "the watch never read the stored entry"
            sm_a.send_event(inst, "PAY")
            sm_a.send_event(inst, "SHIP")
            thread.join(60)
            assert ended.is_set(), "the watch through the other process did not end"
            assert [(e.sequence, e.event, e.to_state) for e in seen] == [
                (1, "create", "pending"),
                (2, "PAY", "paid"),
                (3, "SHIP", "shipped"),
            ]
            assert seen[-1].instance_state is InstanceState.COMPLETED
    finally:
        for proc in (driver, watcher):
            proc.kill()
            proc.wait(10)
