"""examples/usage_example.py runs to SUCCEEDED as its header says: with its embedded server,
and twice in a row against one `agentrun serve` (the second run must not trip over the first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.subprocess_server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def _example(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "usage_example.py"), *args],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


def _succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "approved by alice" in result.stdout


@pytest.mark.timeout(60)
def test_usage_example_runs_embedded() -> None:
    _succeeded(_example("--embedded"))


@pytest.mark.timeout(120)
def test_usage_example_runs_twice_against_one_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        first = _example("--server", server.address)
        _succeeded(first)
        second = _example("--server", server.address)
        _succeeded(second)
        started = [
            line
            for run in (first, second)
            for line in run.stdout.splitlines()
            if line.startswith("started ")
        ]
        assert len(set(started)) == 2, started  # two executions, not the first one twice
    finally:
        server.stop()
