"""Once `commit` returns, the batch survives a SIGKILL; a batch is never half there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agentrun.storage.sql import SqlStore

from .crash_child import EXECUTION_ID

ROOT = Path(__file__).resolve().parents[2]


def _run_child_until(url: str, commits: int) -> int:
    """Starts the committing child, kills it with SIGKILL after `commits` acknowledged
    commits, and returns the last batch number it saw acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_child", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    last = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            last = int(line)
            if last >= commits:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL, "the child died before it was killed"
    return last


async def test_acknowledged_commits_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
    acknowledged = _run_child_until(url, commits=150)
    assert acknowledged >= 150

    store = SqlStore(url)
    await store.open()
    try:
        events = await store.list_events(EXECUTION_ID, limit=100_000)
        nodes = await store.get_nodes(EXECUTION_ID)
        execution = await store.get_execution(EXECUTION_ID)
    finally:
        await store.close()
    kept = len(events)
    # Everything acknowledged is there; at most the batch in flight when killed is extra.
    assert kept >= acknowledged
    assert [e.sequence for e in events] == list(range(1, kept + 1))
    # Atomic: each kept batch has its node, its event and its execution update; no more.
    assert [n.node_id for n in nodes] == [f"n{i:06d}" for i in range(1, kept + 1)]
    assert execution is not None and execution.last_sequence == kept
