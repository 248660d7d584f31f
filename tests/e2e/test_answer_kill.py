"""kill -9 between an answer and its commit: ten map items wait for approvals on a real
`agentrun serve` (SQLite); their ten answers are sent at once and the server is killed as soon
as the first answer row is in the database. After a restart every item is answered exactly
once, with the data sent for it: an answer that was stored before the kill is applied by the
restarted server (and sending it again is refused), one that was not is sent again."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentrun.client import AgentrunError, Client, ExecutionState, IllegalTransition
from tests.server.subprocess_server import ServerProcess

pytestmark = pytest.mark.timeout(240)

MAPPED = """
name: mapped
nodes:
  - id: each
    map:
      items: "${{ input.docs }}"
      node:
        wait: {signal: review, schema: {type: object, required: [n]}}
output: "${{ nodes.each.output }}"
"""
ITEMS = 10


def answers_in(db: Path) -> dict[str, str | None]:
    """signal id -> consumed_by of the answers stored so far."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "select signal_id, consumed_by from signals where signal_id like 'wait:%'"
        ).fetchall()
    return dict(rows)


def waits_of(client: Client, execution: str) -> dict[int, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waits = {w.map_index: w for w in client.list_waits(execution=execution)}
        if len(waits) == ITEMS:
            return waits
        time.sleep(0.05)
    raise AssertionError("the items never all waited")


def test_kill_9_between_answer_and_commit_applies_each_answer_once(tmp_path: Path) -> None:
    db = tmp_path / "agentrun.db"
    server = ServerProcess(tmp_path).start()
    try:
        with Client(server.address, api_key="") as client:
            client.create_workflow(source=MAPPED)
            execution = client.start_execution("mapped", {"docs": list(range(ITEMS))}).id
            waits = waits_of(client, execution)

        outcomes: dict[int, str] = {}

        def answer(i: int) -> None:
            with Client(server.address, api_key="") as c:
                try:
                    c.answer_wait(waits[i], {"n": i})
                    outcomes[i] = "ok"
                except AgentrunError as exc:
                    outcomes[i] = type(exc).__name__

        threads = [threading.Thread(target=answer, args=(i,)) for i in range(ITEMS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not answers_in(db):
            assert time.monotonic() < deadline, "no answer was ever stored"
        server.proc.kill()  # SIGKILL, at once
        server.proc.wait(10)
        for t in threads:
            t.join(60)
        at_kill = answers_in(db)
        caught = sorted(k for k, v in at_kill.items() if v is None)
        print(
            f"answers stored at the kill: {len(at_kill)}, of which not yet applied: {len(caught)}; "
            f"callers saw {sorted(outcomes.values())}"
        )

        server.start()
        with Client(server.address, api_key="") as client:
            for i, wait in waits.items():
                if f"wait:{wait.wait_id}" in at_kill:
                    # Stored before the kill: the restarted server applies it; another is refused.
                    with pytest.raises(IllegalTransition):
                        client.answer_wait(wait, {"n": -1})
                else:
                    client.answer_wait(wait, {"n": i})
            final = client.wait(execution, timeout=120)
            assert final.state is ExecutionState.SUCCEEDED, final.error
            assert final.output == [{"n": i} for i in range(ITEMS)]
            received = [
                e.data["wait_id"]
                for e in client.list_execution_events(execution)
                if e.type == "signal.received"
            ]
            assert sorted(received) == sorted(w.wait_id for w in waits.values())
        assert all(v is not None and not v.startswith("refused:") for v in answers_in(db).values())
    finally:
        server.stop()
