"""Shared set-up of the console tests: the console's npm packages (installed once when missing)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import ConsoleServer, chromium_paths, start_chromium

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
        pytest.skip(
            "Node.js is not installed (scripts/ensure-test-tools.sh installs nothing for it)"
        )
    if not (CONSOLE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CONSOLE,
            check=True,
            timeout=600,
        )
    return npm


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the console's browser tests."""
    if chromium_paths() is None:
        pytest.skip("chromium/chromedriver missing: scripts/ensure-test-tools.sh installs them")
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """`agentrun serve --http-listen` without API keys, shared by the browser tests."""
    served = ConsoleServer(tmp_path_factory.mktemp("console-server")).start()
    try:
        yield served
    finally:
        served.stop()
