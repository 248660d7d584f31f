"""A private PostgreSQL server for the tests that stop it or kill its backends.

The shared server (127.0.0.1:5432) is never touched: `PrivatePostgres` runs `initdb` into a
temporary folder, starts `postgres` on a free port with its socket in that folder, and removes
everything in `close()`. As root, every server command runs as the `postgres` OS user (the
server refuses to run as root), and the folder is handed to that user.

`PrivatePostgres(template=data)` copies the data folder of a stopped server instead of running
`initdb` and migrating again (tests/durability/conftest.py keeps one migrated template per
session): initdb, CREATE DATABASE and the migrations cost 4 to 6 s per test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)


def find_bin() -> Path | None:
    override = os.environ.get("AGENTRUN_PG_BIN")
    for folder in ([override] if override else []) + list(BIN_DIRS):
        if folder and (Path(folder) / "initdb").exists():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """`with PrivatePostgres() as pg:` — `pg.url` (asyncpg driver), `pg.dsn` (plain), `stop()`,
    `start()`, `terminate_backends()`."""

    def __init__(
        self,
        *,
        database: str = "agentrun",
        max_connections: int = 200,
        template: Path | None = None,
    ) -> None:
        bin_dir = find_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin = bin_dir
        self.database = database
        self.max_connections = max_connections
        self.template = template
        self.root = Path(tempfile.mkdtemp(prefix="agentrun-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.running = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _cmd(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)

    def init(self) -> None:
        if self.template is not None:
            self._copy_template(self.template)
            return
        self._cmd(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = {self.max_connections}\n"
                "shared_buffers = 64MB\nfsync = on\nsynchronous_commit = on\n"
                "log_min_messages = warning\n"
            )
        self.start()
        self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def _copy_template(self, template: Path) -> None:
        """The data folder of a stopped server (its databases, schema and settings), moved to
        this server's port and socket folder."""
        shutil.copytree(template, self.data, symlinks=True)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for folder, dirs, files in os.walk(self.data):
                os.chown(folder, user.pw_uid, user.pw_gid)
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.root}'\n")
        self.start()

    def start(self) -> None:
        for attempt in range(3):
            result = self._cmd(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "30",
                "start",
                check=False,
            )
            if result.returncode == 0:
                self.running = True
                return
            if "could not bind" in self.log.read_text(errors="replace") and attempt < 2:
                # The port was taken since it was chosen: move to another one.
                self.port = free_port()
                with open(self.data / "postgresql.conf", "a") as conf:
                    conf.write(f"\nport = {self.port}\n")
                continue
            raise RuntimeError(
                f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log.read_text()}"
            )

    def stop(self, mode: str = "fast") -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Runs one statement through a fresh connection (asyncpg on its own loop)."""
        import asyncio

        import asyncpg

        async def run() -> str:
            conn = await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}",
                timeout=5,
            )
            try:
                return str(await conn.execute(sql))
            finally:
                await conn.close()

        return asyncio.run(run())

    def terminate_backends(self) -> int:
        """pg_terminate_backend on every other client backend of the database; how many."""
        import asyncio

        import asyncpg

        async def run() -> int:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                    self.database,
                )
                return sum(1 for r in rows if r[0])
            finally:
                await conn.close()

        return asyncio.run(run())

    def close(self) -> None:
        try:
            if self.data.exists():
                with contextlib.suppress(Exception):
                    self._cmd(
                        "pg_ctl",
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                        "stop",
                        check=False,
                    )
        finally:
            self.running = False
            # A last resort if pg_ctl could not stop it: the postmaster's own pid, nothing broader.
            pidfile = self.data / "postmaster.pid"
            if pidfile.exists():
                with contextlib.suppress(Exception):
                    pid = int(pidfile.read_text().split()[0])
                    os.kill(pid, 9)
                    time.sleep(0.2)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.init()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
