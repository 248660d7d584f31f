"""kill -9 the server while a state machine action waits for its next attempt; after a restart
the attempt runs (once, with its number) and the event completes. An action's retry is a
stored row (the pending event and a retry timer), not a sleeping coroutine (issue 14)."""

from __future__ import annotations

import collections
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentrun.client import Client
from agentrun.client.machines import InstanceState, MachinesClient, TransitionKind
from tests.machines.test_kill_restart import start_driver

pytestmark = pytest.mark.timeout(180)

MACHINE = """
name: flaky
mode: state_machine
initial: idle
states:
  idle:
    on:
      GO:
        target: done
        actions:
          - tool: {name: core.echo, args: {step: before}}
          - tool: {name: test.flaky, args: {ok_on: 2}}
            retry: {max_attempts: 3, backoff: fixed, initial_interval: 4s}
        assign: {went: true}
  done: {final: true}
"""


def _attempts(ledger: Path) -> collections.Counter[tuple[str, str, str]]:
    if not ledger.exists():
        return collections.Counter()
    return collections.Counter(
        tuple(line.split())
        for line in ledger.read_text().splitlines()
        if line  # type: ignore[misc]
    )


def _held(db: Path) -> int:
    """Instances whose pending event and retry timer are committed."""
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "select count(*) from sm_instances i join sm_timers t on t.instance_id = i.id"
            " where i.pending is not null and t.key like 'retry:%'"
        ).fetchone()[0]


def test_an_action_retry_survives_kill_9_between_attempts(tmp_path: Path) -> None:
    """Two instances each fail attempt 1 of an action with a 4 s backoff; the server is killed
    before attempt 2. After the restart, `alone` finishes by itself (its retry timer fires);
    `resent`'s sender sends its event again with its id and gets the one outcome."""
    db, ledger = tmp_path / "agentrun.db", tmp_path / "ledger.txt"
    proc, port = start_driver(db, ledger)
    sent: dict[str, Any] = {}
    try:
        with Client(f"127.0.0.1:{port}", api_key="") as client:
            client.create_workflow(source=MACHINE)
            sm = MachinesClient(client)
            alone, resent = (sm.create_instance("flaky", request_id=r) for r in ("alone", "resent"))

            def send(inst: Any) -> None:
                # Blocks while the action retries; the kill ends it with UNAVAILABLE.
                try:
                    sent[inst.id] = sm.send_event(inst, "GO", {"n": 1}, event_id="go-1")
                except Exception:
                    pass

            senders = [
                threading.Thread(target=send, args=(i,), daemon=True) for i in (alone, resent)
            ]
            for sender in senders:
                sender.start()
            deadline = time.monotonic() + 30
            while _held(db) < 2:
                assert time.monotonic() < deadline, "no retry was stored"
                time.sleep(0.01)
            # Attempt 1 failed and its retry is stored; attempt 2 is 4 s away. Kill the
            # server in between.
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for sender in senders:
                sender.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not sent, "an event completed before the kill"
    assert sorted(key[2] for key in _attempts(ledger)) == ["1", "1"]

    proc, port = start_driver(db, ledger)
    try:
        with Client(f"127.0.0.1:{port}", api_key="") as client:
            sm = MachinesClient(client)
            record, entry = sm.send_event(resent.id, "GO", {"n": 1}, event_id="go-1")
            assert (record.current_state, entry.kind, entry.sequence) == (
                "done",
                TransitionKind.TRANSITION,
                2,
            )
            for inst in (alone, resent):
                final = sm.wait(inst.id, timeout=60)
                assert (final.state, final.current_state, final.data) == (
                    InstanceState.COMPLETED,
                    "done",
                    {"went": True},
                )
                history = list(sm.history(inst.id))
                assert [(e.sequence, e.kind, e.event, e.event_id) for e in history] == [
                    (1, TransitionKind.CREATED, "create", ""),
                    (2, TransitionKind.TRANSITION, "GO", "go-1"),
                ]
                assert [(a.path, a.succeeded, a.attempts) for a in history[1].actions] == [
                    ("states.idle.on.GO[0].actions[0]", True, 1),
                    ("states.idle.on.GO[0].actions[1]", True, 2),
                ]
    finally:
        proc.kill()
        proc.wait(10)
    ran = _attempts(ledger)
    # Attempt 1 before the kill, attempt 2 after the restart: each exactly once per instance.
    assert set(ran.values()) == {1}
    assert sorted((key[0], key[2]) for key in ran) == sorted(
        (i.id, n) for i in (alone, resent) for n in ("1", "2")
    )
