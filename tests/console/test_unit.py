"""The console's own unit tests (vitest, console/test/): graph building and layout, live
state from events, signal forms, filters, API error decoding; and its type check."""

from __future__ import annotations

import subprocess

import pytest

from tests.console.conftest import CONSOLE

pytestmark = pytest.mark.timeout(600)


def test_vitest(npm: str) -> None:
    result = subprocess.run(
        [npm, "exec", "--", "vitest", "run", "--reporter=dot"],
        cwd=CONSOLE,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_typescript_types(npm: str) -> None:
    result = subprocess.run(
        [npm, "exec", "--", "tsc", "--noEmit"],
        cwd=CONSOLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
