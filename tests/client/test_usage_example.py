"""examples/usage_example.py runs to SUCCEEDED (with its embedded server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_usage_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "usage_example.py"), "--embedded"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "approved by alice" in result.stdout
