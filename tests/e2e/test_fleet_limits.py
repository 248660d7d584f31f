"""Three `agentrun serve` replicas on one PostgreSQL share a concurrency limit of 5 on a tool
(issue 16, item 3): 200 executions call an HTTP service through `http.request`, and the
service itself counts the calls in flight. One replica is killed with SIGKILL while it
holds slots; its slots come back when its lease expires and every execution succeeds.
"""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentrun.client import Client, ExecutionState
from tests.server.subprocess_server import ServerProcess, start_all
from tests.storage import conftest as storage_fixtures
from tests.storage.conftest import PgServer

# Throwaway databases on the shared PostgreSQL server (a session fixture).
pg_server = storage_fixtures.pg_server

pytestmark = pytest.mark.timeout(300)

LIMIT = 5
EXECUTIONS = 200
# Long enough that a live replica keeps its slots on a busy machine (at 3 s, stalls at load
# 15+ let leases expire and the fleet fill more than 5); the killed replica's slots come back
# after it.
LEASE = 10.0


class InFlight:
    """An HTTP service that answers after a short pause and records how many requests it
    was serving at once (the tool's side of the limit)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        # Requests wait here until the test opens it: every slot the fleet grants fills up.
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.served = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with owner.lock:
                    owner.current += 1
                    owner.peak = max(owner.peak, owner.current)
                try:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    owner.gate.wait(120)
                    time.sleep(owner.pause)
                    body = b'{"ok": true}'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with owner.lock:
                        owner.current -= 1
                        owner.served += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def until(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_three_replicas_share_a_limit_of_five_on_a_tool(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.create_database(migrated=True).replace(
        "postgresql+asyncpg://", "postgresql://", 1
    )
    service = InFlight(pause=0.1)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"lease: {LEASE}s\n"
        f"limits: {{max_running_per_target: {{http.request: {LIMIT}}}}}\n"
        # Calls wait at the closed gate until the test has seen the fleet full: longer
        # than the tool's default 10 s timeout on a busy machine.
        f"tools: {{http.request: {{allow: ['127.0.0.1:{service.port}'], timeout: 60}}}}\n"
    )
    replicas: list[ServerProcess] = []
    try:
        for name in "abc":
            workdir = tmp_path / name
            workdir.mkdir()
            replicas.append(
                ServerProcess(
                    workdir,
                    db=url,
                    args=["--config", str(config)],
                    env={"AGENTRUN_REPLICA_ID": name},
                )
            )
        start_all(replicas, timeout=60)
        clients = [Client(r.address, timeout=30) for r in replicas]
        clients[0].create_workflow(
            source=(
                "name: call\nnodes:\n"
                "  - id: c\n"
                "    retry: {max_attempts: 5, initial_interval: 100ms}\n"
                f"    tool: {{name: http.request, args: {{url: 'http://127.0.0.1:{service.port}/work',"
                " method: POST, json: {n: '${{ input.n }}'}}}\n"
            )
        )
        ids = [clients[i % 3].start_execution("call", {"n": i}).id for i in range(EXECUTIONS)]
        # Every execution is waiting for a slot or holding one at the closed gate: the fleet
        # fills its 5 slots and no more (each replica alone would fill 5 of its own).
        until(lambda: service.current == LIMIT, "the limit's calls in flight")
        time.sleep(1.0)
        assert service.current == LIMIT
        service.gate.set()
        # Kill one replica while the fleet is busy: it holds slots when it dies.
        until(lambda: service.served >= EXECUTIONS // 4, "a quarter of the calls")
        assert replicas[2].proc is not None
        replicas[2].proc.send_signal(signal.SIGKILL)
        replicas[2].proc.wait()
        killed_at_served = service.served
        finals = [clients[i % 2].wait(execution, timeout=240) for i, execution in enumerate(ids)]
        assert [f.state for f in finals].count(ExecutionState.SUCCEEDED) == EXECUTIONS
        assert service.served > killed_at_served
        assert service.peak == LIMIT, service.peak
        for c in clients:
            c.close()
    finally:
        service.gate.set()
        for r in replicas:
            r.stop()
        service.close()
