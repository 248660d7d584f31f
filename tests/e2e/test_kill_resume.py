"""kill -9 a real process mid-run; after a restart every execution finishes and no step
whose completion was committed runs again."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

DRIVER = Path(__file__).with_name("kill_driver.py")


def _ledger(path: Path) -> collections.Counter[tuple[str, str]]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(
        tuple(line.split()[:2]) for line in path.read_text().splitlines() if line
    )


def _committed(db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select execution_id, node_id from nodes where state = 'SUCCEEDED'"
        ).fetchall()
    return {(e, n) for e, n in rows}


def test_kill_9_then_resume_runs_each_committed_step_once(tmp_path: Path) -> None:
    db, ledger = tmp_path / "agentrun.db", tmp_path / "ledger.txt"
    env = dict(os.environ, KILL_STEPS="6")
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(db), str(ledger), "start", "3"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 20
        while sum(_ledger(ledger).values()) < 5:
            assert time.monotonic() < deadline, "the driver made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed = _committed(db)
    assert committed, "some steps completed before the kill"
    ran_before = _ledger(ledger)

    subprocess.run(
        [sys.executable, str(DRIVER), str(db), str(ledger), "resume"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    ran = _ledger(ledger)
    for key in committed:
        assert ran[key] == 1, f"{key} was committed before the kill but ran {ran[key]} times"
    with sqlite3.connect(db) as conn:
        states = conn.execute("select state from executions").fetchall()
        nodes = conn.execute("select count(*) from nodes where state = 'SUCCEEDED'").fetchone()[0]
    assert [s for (s,) in states] == ["SUCCEEDED"] * 3
    assert nodes == 18
    # Nothing lost: every step of every execution ran at least once.
    assert len(ran) == 18
    # At most the steps in flight at the kill ran twice.
    assert sum(ran.values()) - 18 <= sum(1 for k in ran_before if k not in committed)
