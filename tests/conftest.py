"""Suite-wide checks.

Every in-process agentrun server (whichever fixture or test built it) reports each finished
call's status to `CALL_OBSERVERS`, and every `agentrun serve` child that
tests/server/subprocess_server.py starts writes it to its access log; a test in which any call
answered INTERNAL or UNKNOWN fails,
because nothing a test sends may crash the server or leak an unmapped error. A test that means to
provoke one says so with `@pytest.mark.allow_rpc_status("INTERNAL", reason=...)`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from agentrun.server.interceptors import CALL_OBSERVERS
from tests.server import subprocess_server

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
    # `agentrun serve` children (tests/server/subprocess_server.py): their access logs.
    for child in list(subprocess_server.WATCHED):
        seen += [
            f"{method} -> {code} (agentrun serve)"
            for method, code in child.bad_statuses()
            if code not in allowed
        ]
        if child.proc is not None and child.proc.poll() is not None:
            subprocess_server.WATCHED.remove(child)
    if seen:
        pytest.fail(
            f"{len(seen)} call(s) answered INTERNAL or UNKNOWN: {seen[:10]}"
            " (see the server log; map the error in agentrun/server/errors.py)",
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    """Lets the Python children the suite starts (`agentrun serve`, replicas, workers: a few
    hundred) reuse each other's bytecode. With PYTHONDONTWRITEBYTECODE set (as in this
    repository's Dockerfile and some CI images) every child compiled the ~190 agentrun modules
    from source again, about 0.2 s of CPU each; they now write and read it under a
    PYTHONPYCACHEPREFIX of the session's own, so the source tree still gets no __pycache__."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="agentrun-test-pycache-")
    atexit.register(shutil.rmtree, prefix, True)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = prefix


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Waits for the throwaway PostgreSQL databases still being dropped in the background
    (tests/storage/conftest.py); names any left behind."""
    import sys

    storage = sys.modules.get("tests.storage.conftest")
    if storage is None:
        return
    left = storage.wait_for_drops()
    if left:
        session.config.get_terminal_writer().line(
            f"throwaway databases not dropped: {left}", yellow=True
        )
