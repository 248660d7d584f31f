"""The console's own unit tests (vitest, console/test/): graph building and layout, live
state from events, signal forms, filters, API error decoding; and its type check."""

from __future__ import annotations

import pytest

from tests.console.conftest import npm_exec

pytestmark = pytest.mark.timeout(600)


def test_vitest(npm: str) -> None:
    npm_exec(npm, "vitest", "run", "--reporter=dot")


def test_typescript_types(npm: str) -> None:
    npm_exec(npm, "tsc", "--noEmit", timeout=300)
