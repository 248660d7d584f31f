"""Suite-wide checks.

Every in-process agentrun server (whichever fixture or test built it) reports each finished
call's status to `CALL_OBSERVERS`; a test in which any call answered INTERNAL or UNKNOWN fails,
because nothing a test sends may crash the server or leak an unmapped error. A test that means to
provoke one says so with `@pytest.mark.allow_rpc_status("INTERNAL", reason=...)`.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from agentrun.server.interceptors import CALL_OBSERVERS

FORBIDDEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@pytest.fixture(autouse=True)
def _no_internal_or_unknown_status(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Records the calls of this test that answered INTERNAL or UNKNOWN; fails it if any did."""
    allowed = {
        code for marker in request.node.iter_markers("allow_rpc_status") for code in marker.args
    }
    seen: list[str] = []

    def observe(method: str, code: grpc.StatusCode) -> None:
        if code in FORBIDDEN and code.name not in allowed:
            seen.append(f"{method} -> {code.name}")

    CALL_OBSERVERS.append(observe)
    try:
        yield seen
    finally:
        CALL_OBSERVERS.remove(observe)
    if seen:
        pytest.fail(
            f"{len(seen)} call(s) answered INTERNAL or UNKNOWN: {seen[:10]}"
            " (see the server log; map the error in agentrun/server/errors.py)",
            pytrace=False,
        )
