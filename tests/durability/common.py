"""Helpers shared by the durability tests: reading what the store committed, and child processes
(the engine driver, `agentrun serve` replicas) that are always cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"}


def run_sync(coro: Any) -> Any:
    """Runs a coroutine to the end on a thread of its own (works inside a running loop too)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class Snapshot:
    """What the store holds: executions by id, node rows, and (optionally) events."""

    executions: dict[str, dict[str, Any]]
    nodes: dict[tuple[str, str], dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)

    def outputs(self) -> dict[str, Any]:
        """Committed outputs of SUCCEEDED steps by idempotency key (`execution/node`)."""
        return {
            f"{e}/{n}": row["output"]
            for (e, n), row in self.nodes.items()
            if row["state"] == "SUCCEEDED"
        }

    def expected_keys(self, steps: int, *, skip: Iterable[str] = ()) -> set[str]:
        skipped = set(skip)
        return {f"{e}/s{i}" for e in self.executions if e not in skipped for i in range(steps)}

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.executions.values():
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        return counts

    def unfinished(self) -> list[str]:
        return [i for i, row in self.executions.items() if row["state"] not in TERMINAL]


async def snapshot(url: str, *, events: bool = False) -> Snapshot:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            if not {"executions", "nodes", "events"} <= set(tables):
                return Snapshot({}, {}, [])  # killed before its first migration finished
            rows = await conn.execute(
                sa.text(
                    "SELECT id, state, owner, lease_epoch, lease_expires_at, request_id, last_sequence"
                    " FROM executions"
                )
            )
            executions = {r.id: dict(r._mapping) for r in rows}
            rows = await conn.execute(
                sa.text("SELECT execution_id, node_id, state, attempt, output FROM nodes")
            )
            nodes = {
                (r.execution_id, r.node_id): {
                    "state": r.state,
                    "attempt": r.attempt,
                    "output": _json(r.output),
                }
                for r in rows
            }
            found = []
            if events:
                rows = await conn.execute(
                    sa.text(
                        "SELECT execution_id, sequence, type, node_id, data FROM events"
                        " ORDER BY execution_id, sequence"
                    )
                )
                found = [dict(r._mapping) | {"data": _json(r.data)} for r in rows]
    finally:
        await engine.dispose()
    return Snapshot(executions, nodes, found)


async def _activity(url: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT pid, state, wait_event_type, now() - xact_start AS xact_age, left(query, 120) AS query"
                    " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


def pg_activity(url: str) -> str:
    """The database's sessions, for failure messages (who holds a transaction open)."""
    try:
        rows = run_sync(_activity(url))
    except Exception as exc:
        return f"(pg_stat_activity unavailable: {exc})"
    return "\n".join(
        f"  {r['pid']} {r['state']} {r['wait_event_type']} xact {r['xact_age']} {r['query']!r}"
        for r in rows
    )


async def _leases(url: str) -> dict[str, tuple[str | None, int, str]]:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT id, owner, lease_epoch, state FROM executions")
            )
            return {r.id: (r.owner, r.lease_epoch, r.state) for r in rows}
    finally:
        await engine.dispose()


def read_leases(url: str) -> dict[str, tuple[str | None, int, str]]:
    """execution id -> (owner, lease epoch, state): a light read, for timing take-overs."""
    return run_sync(_leases(url))


def read_snapshot(url: str, *, events: bool = False) -> Snapshot:
    return run_sync(snapshot(url, events=events))


def check_event_logs(snap: Snapshot) -> None:
    """Every execution's events are 1..last_sequence without a gap, and each step has exactly one
    `node.succeeded` event, carrying the committed output."""
    by_exec: dict[str, list[dict[str, Any]]] = {}
    for ev in snap.events:
        by_exec.setdefault(ev["execution_id"], []).append(ev)
    for execution_id, row in snap.executions.items():
        seqs = [e["sequence"] for e in by_exec.get(execution_id, [])]
        assert seqs == list(range(1, len(seqs) + 1)), f"{execution_id}: event sequence has gaps"
        assert len(seqs) == row["last_sequence"], (
            f"{execution_id}: last_sequence {row['last_sequence']} != {len(seqs)}"
        )
        succeeded: dict[str, Any] = {}
        for ev in by_exec.get(execution_id, []):
            if ev["type"] == "node.succeeded":
                assert ev["node_id"] not in succeeded, (
                    f"{execution_id}/{ev['node_id']} succeeded twice in the log"
                )
                succeeded[ev["node_id"]] = (ev["data"] or {}).get("output")
        for (e, n), node in snap.nodes.items():
            if e == execution_id and node["state"] == "SUCCEEDED":
                assert succeeded.get(n) == node["output"], (
                    f"{e}/{n}: event output differs from the node's"
                )


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Child:
    """A child process whose output goes to a log file; `kill()` is SIGKILL; never left behind."""

    def __init__(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, name: str = ""
    ) -> None:
        self.argv = argv
        self.log = log
        self.name = name or Path(argv[1]).name
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Child:
        _STARTED.append(self)
        self._out = open(self.log, "ab")  # noqa: SIM115 - the child writes it until killed
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def line(self, prefix: str) -> str | None:
        for text in self.lines():
            if text.startswith(prefix):
                return text
        return None

    def wait_line(self, prefix: str, timeout: float) -> str:
        def found() -> str | None:
            text = self.line(prefix)
            if text is None and not self.alive:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) before {prefix!r}:\n{self.tail()}"
                )
            return text

        return wait_until(found, timeout, f"{self.name}: {prefix!r}", 0.02)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines()[-n:])

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)
        self._close_log()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        out = getattr(self, "_out", None)
        if out is not None and not out.closed:
            out.close()


_STARTED: list[Child] = []


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Every Child started inside the block (or appended to the list) is killed when the block
    ends, whatever happens."""
    mark = len(_STARTED)
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in [*started, *_STARTED[mark:]]:
            with contextlib.suppress(Exception):
                child.kill()
        del _STARTED[mark:]


def driver(url: str, ledger: Path, log: Path, *, generation: int, **options: Any) -> Child:
    argv = [
        sys.executable,
        str(DRIVER),
        "--url",
        url,
        "--ledger",
        str(ledger),
        "--generation",
        str(generation),
    ]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return Child(argv, log, name=f"driver gen {generation}")


def agentrun_command() -> list[str]:
    """The `agentrun` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("agentrun")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from agentrun.cli import main; sys.exit(main())"]


class Replica:
    """`agentrun serve` on a store URL, with a replica id, a lease, and the ledger tool."""

    def __init__(self, workdir: Path, url: str, name: str, ledger: Path, *, lease: float) -> None:
        from tests.durability.pg import free_port

        self.workdir = workdir
        self.url = url
        self.name = name
        self.ledger = ledger
        self.lease = lease
        self.port = free_port()
        self.generation = 0
        self._log_offset = 0
        self.child: Child | None = None
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "replica_id": name,
                    "lease": lease,
                    "log_format": "text",
                    "shutdown_grace": 2,
                    "tools": {
                        "entry_points": False,
                        "register": [
                            {
                                "factory": "tests.durability.ledger:ledger_tool",
                                "options": {"path": str(ledger), "replica": name},
                            }
                        ],
                    },
                }
            )
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Child:
        self.generation += 1
        env = {
            "AGENTRUN_DATABASE_URL": self.url,
            "AGENTRUN_CONFIG": str(self.config),
            "DURABILITY_GENERATION": str(self.generation),
            "DURABILITY_REPLICA": self.name,
        }
        argv = [*agentrun_command(), "serve", "--listen", self.address]
        log = self.workdir / f"{self.name}.log"
        # wait_ready looks only at what this process writes.
        self._log_offset = len(log.read_text(errors="replace")) if log.exists() else 0
        self.child = Child(argv, log, env=env, name=f"replica {self.name}").start()
        return self.child

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.child is not None
        start = time.monotonic()
        seen = self._log_offset
        retries = 3
        while True:
            text = self.child.log.read_text(errors="replace")[seen:]
            if "agentrun serving on" in text:
                return
            if not self.child.alive:
                if ("cannot listen on" in text or "is already in use" in text) and retries:
                    # The free port was taken by someone else meanwhile: another one.
                    from tests.durability.pg import free_port

                    retries -= 1
                    self.port = free_port()
                    self.start()
                    seen = self._log_offset
                    continue
                raise AssertionError(f"replica {self.name} exited:\n{self.child.tail()}")
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"replica {self.name} not serving after {timeout}s:\n{self.child.tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def stop(self) -> None:
        if self.child is not None:
            self.child.terminate()


def serve_all(procs: list[Child], replicas: list[Replica], source: str) -> list[str]:
    """Starts every replica, waits until each serves, creates the workflow `source`; returns
    their addresses."""
    from tests.durability.grpc_util import create_workflow

    for r in replicas:
        procs.append(r.start())
    for r in replicas:
        r.wait_ready()
    addresses = [r.address for r in replicas]
    run_sync(create_workflow(addresses, source))
    return addresses


def diagnose(
    snap: Snapshot, logs: dict[str, str], ambiguous_starts: Iterable[str] = ()
) -> dict[str, str]:
    """What an unfinished execution looks like, for failure messages. The signatures are those of
    bugs these tests found (tests/durability/test_engine_bugs.py reproduces each)."""
    found: dict[str, str] = {}
    ambiguous = set(ambiguous_starts)
    for execution_id in snap.unfinished():
        row = snap.executions[execution_id]
        log = logs.get(row["owner"] or "", "")
        if execution_id in ambiguous and row["state"] == "PENDING":
            found[execution_id] = "start answered with a store error, never launched"
        elif f"lease on execution {execution_id} was lost" in log:
            found[execution_id] = "its owner stopped it as 'lease lost' yet still holds the lease"
        elif f"could not resume execution {execution_id}" in log:
            found[execution_id] = "its owner failed to resume it"
        else:
            found[execution_id] = "no known signature"
    return found


def wait_finished(url: str, timeout: float, *, logs: Callable[[], dict[str, str]] = dict) -> None:
    """Waits until every execution is finished; fails with what the unfinished ones look like."""
    deadline = time.monotonic() + timeout
    while True:
        snap = read_snapshot(url)
        unfinished = snap.unfinished()
        if not unfinished:
            return
        if time.monotonic() > deadline:
            why = diagnose(snap, logs())
            detail = [
                (
                    i,
                    snap.executions[i]["state"],
                    snap.executions[i]["owner"],
                    snap.executions[i]["lease_epoch"],
                    why[i],
                )
                for i in unfinished[:10]
            ]
            raise AssertionError(
                f"{len(unfinished)} executions unfinished after {timeout:.0f}s: {detail}"
            )
        time.sleep(0.25)
