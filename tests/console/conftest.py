"""Shared set-up of the console tests: the console's npm packages (installed once when missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "console"
STATIC = ROOT / "agentrun" / "server" / "console" / "static"


def npm_exec(npm: str, *args: str, env: dict[str, str] | None = None, timeout: float = 540) -> str:
    """Runs a tool of console/node_modules (`npm exec -- ARGS`); fails the test with its output."""
    result = subprocess.run(
        [npm, "exec", "--", *args],
        cwd=CONSOLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="session")
def npm() -> str:
    """npm, with console/node_modules installed from the lock file (`make console` does the same)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js is not installed (scripts/ensure-test-tools.sh installs nothing for it)")
    if not (CONSOLE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CONSOLE,
            check=True,
            timeout=600,
        )
    return npm
