"""`agentrun serve` in a child process on a free port, over a SQLite file in a temp dir.

Unless the test names a database (`db=`) or asks for an empty one (`fresh=True`), the file is
a copy of the suite's migrated template (tests/storage/templates.py): the child finds the schema
at the migrations' head, as a restarted server does, instead of migrating it again.

The child writes its access log (one line per call, with the status) to `server.log`; the
suite-wide check (tests/conftest.py) reads the new lines of every child after each test and
fails the test if a call answered INTERNAL or UNKNOWN, as it does for in-process servers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
# Children started and not yet read to the end of their logs (see `bad_statuses`).
WATCHED: list[ServerProcess] = []
# An access-log line (agentrun.server.interceptors): method, status code, duration, tenant.
ACCESS_LINE = re.compile(r"(/\S+) ([A-Z_]+) \d+(?:\.\d+)?ms tenant=")
BAD = ("INTERNAL", "UNKNOWN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] = (),  # type: ignore[assignment]
        db: str | None = None,
        fresh: bool = False,
    ) -> None:
        self.workdir = workdir
        if db is None:
            path = workdir / "agentrun.db"
            db = f"sqlite:///{path}"
            if not fresh and not path.exists():
                from tests.storage.templates import migrated_sqlite

                db = migrated_sqlite(path, driver="sqlite")
        self.db = db
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"
        self._read = 0  # bytes of the log `bad_statuses` has read

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Starts the child and waits until its health check answers SERVING."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> ServerProcess:
        """Starts the child without waiting for it (`wait_ready`; `start_all`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
        env.update(PYTHONPATH=str(ROOT), AGENTRUN_ACCESS_LOG="1")
        env.update(self.extra_env)
        command = [
            sys.executable,
            "-c",
            "import sys; from agentrun.cli import main; sys.exit(main())",
            "serve",
            "--listen",
            self.address,
            "--db",
            self.db,
            "--grace",
            "5",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        if self not in WATCHED:
            WATCHED.append(self)
        return self

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not get ready: {self.log.read_text()}")

    def health(self, service: str = "") -> int | None:
        with grpc.insecure_channel(self.address) as channel:
            try:
                return (
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                    .status
                )
            except grpc.RpcError:
                return None

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def bad_statuses(self) -> list[tuple[str, str]]:
        """(method, code) of the calls logged since the last look that answered INTERNAL or
        UNKNOWN."""
        return [(method, code) for method, code in self.new_calls() if code in BAD]

    def new_calls(self) -> list[tuple[str, str]]:
        """(method, code) of every call logged since the last look."""
        try:
            with open(self.log, "rb") as log:
                log.seek(self._read)
                text = log.read()
        except FileNotFoundError:
            return []
        end = text.rfind(b"\n") + 1  # a line still being written is read next time
        self._read += end
        lines = text[:end].decode(errors="replace").splitlines()
        return [(m[1], m[2]) for m in map(ACCESS_LINE.search, lines) if m]


def start_all(servers: list[ServerProcess], timeout: float = 60.0) -> list[ServerProcess]:
    """Starts the children side by side (each start is mostly its own imports and set-up) and
    waits until each serves; stops every one if any fails."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
