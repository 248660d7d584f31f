"""The bad-input harness: a real agentrun server (engine, state machines, gRPC on port 0) per
backend (memory, SQLite, PostgreSQL: the API decides what is valid, the same for every one),
running on a thread of its own so that the tests are plain synchronous gRPC clients and a
health probe can watch the server's event loop from outside.

What the fixtures give a case (`harness`):
- `harness.call(method, request)` / `harness.stream(...)`: one RPC with a proto message or raw
  bytes; the `Outcome` holds the status code, message, decoded `google.rpc.Status` details and
  the response. Every outcome is counted per status code and kept for the canary scan.
- `harness.scan(needle)`: where `needle` appears in the responses, the execution events, the
  server's log records and the database (SQLite file and WAL, or every PostgreSQL row).
- `harness.run(coro)`: runs a coroutine on the server's loop (the engine and store live there).

After every case (autouse `_server_survives`): the server thread is alive, health answers
SERVING, the executions stored before the first case are still readable (GetExecution and
ListExecutionEvents), and the server's loop never held its thread busy for `MAX_STALL` seconds
without yielding. That is measured on the loop itself, in CPU time of its thread between two
wake-ups of a monitor task (`_ServerThread.busy`): a loop that computes for seconds shows them,
while a loop merely starved of a CPU (a busy machine, or the test thread holding the GIL while
it builds a 10,000-element request) shows little. The health probe's slowest answer, which
counts both, is printed in the terminal summary.
Suite-wide (tests/conftest.py): no call answered INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from agentrun.server.convert import to_value
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import workflow_service_pb2 as ws
from tests.server.conftest import STOP_GRACE
from tests.storage.conftest import PgServer

T = TypeVar("T")

# The longest the server's loop may compute without yielding during one case, in CPU seconds
# of its thread (see the module's docstring): a real stall (an expression or a parse holding
# the loop, 12.7 s and 29 s before the fixes) fails; a starved machine does not.
MAX_STALL = 1.0
PROBE_INTERVAL = 0.02
MONITOR_INTERVAL = 0.01

WF = "agentrun.v1.WorkflowService/"
EX = "agentrun.v1.ExecutionService/"
SM = "agentrun.v1.StateMachineService/"

SEED = """
name: seed
input_schema:
  type: object
  properties: {n: {type: integer}}
nodes:
  - id: a
    pass: {value: "${{ input.n }}"}
  - id: b
    needs: [a]
    pass: {value: "${{ nodes.a.output + 1 }}"}
"""

_DETAIL_TYPES = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "RetryInfo": error_details_pb2.RetryInfo,
    "QuotaFailure": error_details_pb2.QuotaFailure,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
}


@dataclass
class Outcome:
    """How one call ended."""

    method: str
    code: grpc.StatusCode
    message: str = ""
    details: list[pb_message.Message] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)

    def detail(self, kind: str) -> Any:
        """The first detail of type `kind` ("BadRequest", "ErrorInfo", ...), or None."""
        wanted = _DETAIL_TYPES[kind]
        return next((d for d in self.details if isinstance(d, wanted)), None)

    @property
    def reason(self) -> str:
        info = self.detail("ErrorInfo")
        return info.reason if info is not None else ""

    @property
    def fields(self) -> list[str]:
        """The field paths of the BadRequest violations."""
        bad = self.detail("BadRequest")
        return [v.field for v in bad.field_violations] if bad is not None else []

    def response(self, kind: type[pb_message.Message]) -> Any:
        return kind.FromString(self.responses[0])

    def __str__(self) -> str:
        return f"{self.method} -> {self.code.name} {self.message[:300]!r} fields={self.fields[:5]}"


class _LogBuffer(logging.Handler):
    """Every log record of the session, formatted with its traceback, for the canary scan."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(repr(record.msg))


class _ServerThread(threading.Thread):
    """The engine, MachineEngine and AgentrunServer on an event loop of their own."""

    def __init__(self, url: str) -> None:
        super().__init__(name="security-server", daemon=True)
        self.url = url
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.engine: Any = None
        self.store: Any = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self.busy = 0.0  # the loop's longest run without yielding since the last take_busy()

    async def _monitor(self) -> None:
        """CPU time of this thread between two wake-ups: what the loop ran in between."""
        while True:
            before = time.thread_time()
            await asyncio.sleep(MONITOR_INTERVAL)
            self.busy = max(self.busy, time.thread_time() - before)

    def take_busy(self) -> float:
        value, self.busy = self.busy, 0.0
        return value

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from agentrun.engine import Engine
        from agentrun.engine.machine import MachineEngine
        from agentrun.integrations import default_agents, default_tools
        from agentrun.server import AgentrunServer, ServerConfig
        from agentrun.storage.sql import SqlStore

        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self.url == "memory":
            from agentrun.storage.memory import MemoryStore

            self.store = MemoryStore()
        else:
            self.store = SqlStore(self.url)
        await self.store.open()
        self.engine = Engine(self.store, tools=default_tools(), agents=default_agents())
        machines = MachineEngine(self.engine)
        await self.engine.start()
        await machines.start()
        server = AgentrunServer(self.engine, ServerConfig.load(env={}))
        self.port = await server.start("127.0.0.1:0")
        monitor = asyncio.create_task(self._monitor())
        self.ready.set()
        try:
            await self._stopping.wait()
        finally:
            monitor.cancel()
            await server.stop(STOP_GRACE)
            await self.engine.stop(grace=0)
            await machines.stop()
            await self.store.close()

    def run_coro(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def shutdown(self) -> None:
        if self.loop is not None and self._stopping is not None and self.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)


class _Probe(threading.Thread):
    """Health/Check every PROBE_INTERVAL on a channel of its own; records the slowest answer."""

    def __init__(self, port: int) -> None:
        super().__init__(name="security-probe", daemon=True)
        self.port = port
        self.max_wait = 0.0
        self.window_max = 0.0  # since the last reset (one case)
        self.failures: list[str] = []
        self.checks = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not self._stopping.is_set():
                started = time.perf_counter()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                waited = time.perf_counter() - started
                self.checks += 1
                self.max_wait = max(self.max_wait, waited)
                self.window_max = max(self.window_max, waited)
                self._stopping.wait(PROBE_INTERVAL)

    def take_window(self) -> float:
        value, self.window_max = self.window_max, 0.0
        return value

    def stop(self) -> None:
        self._stopping.set()
        self.join(35)


class Harness:
    """One backend's server, a client channel, the probe and what every case saw."""

    def __init__(
        self, backend: str, server: _ServerThread, probe: _Probe, logs: _LogBuffer
    ) -> None:
        self.backend = backend
        self.server = server
        self.probe = probe
        self.logs = logs
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{server.port}",
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        self.statuses: collections.Counter[str] = collections.Counter()
        self.outcomes: list[Outcome] = []
        self.stored: list[str] = []  # executions that finished before the first case
        self.case_stall = 0.0  # the health probe's slowest answer during a case
        self.case_busy = 0.0  # the loop's longest run without yielding during a case
        self.stalls: dict[str, float] = {}  # per case, for the summary's slowest

    # -- calls -----------------------------------------------------------------------------
    def call(
        self, method: str, request: bytes | pb_message.Message, *, timeout: float = 30
    ) -> Outcome:
        """A unary call; `request` is a message or raw bytes sent as they are."""
        data = request if isinstance(request, bytes) else request.SerializeToString()
        stub = self.channel.unary_unary("/" + method)
        try:
            response = stub(data, timeout=timeout)
        except grpc.RpcError as exc:
            return self._record(_failed(method, exc))
        return self._record(Outcome(method, grpc.StatusCode.OK, responses=[response]))

    def stream(
        self,
        method: str,
        request: bytes | pb_message.Message,
        *,
        limit: int = 100,
        timeout: float = 10,
    ) -> Outcome:
        """A server-streaming call read until it ends, `limit` responses, or `timeout`."""
        data = request if isinstance(request, bytes) else request.SerializeToString()
        call = self.channel.unary_stream("/" + method)(data, timeout=timeout)
        responses: list[bytes] = []
        try:
            for response in call:
                responses.append(response)
                if len(responses) >= limit:
                    call.cancel()
                    break
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                outcome = _failed(method, exc)
                outcome.responses = responses
                return self._record(outcome)
        return self._record(Outcome(method, grpc.StatusCode.OK, responses=responses))

    def _record(self, outcome: Outcome) -> Outcome:
        self.statuses[outcome.code.name] += 1
        self.outcomes.append(outcome)
        return outcome

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self.server.run_coro(coro, timeout)

    # -- helpers for cases -----------------------------------------------------------------
    def create_workflow(self, source: str) -> Outcome:
        return self.call(WF + "CreateWorkflow", ws.CreateWorkflowRequest(source=source))

    def start(self, workflow: str, input: Any = None, **fields: Any) -> Outcome:
        request = es.StartExecutionRequest(workflow=f"workflows/{workflow}", **fields)
        if input is not None:
            request.input.CopyFrom(to_value(input))
        return self.call(EX + "StartExecution", request)

    def wait_final(self, name: str, timeout: float = 30) -> Any:
        """The execution once it is final (polled over gRPC)."""
        from agentrun.v1 import execution_pb2 as ex_pb

        deadline = time.monotonic() + timeout
        while True:
            got = self.call(EX + "GetExecution", es.GetExecutionRequest(name=name))
            assert got.code == grpc.StatusCode.OK, str(got)
            execution = got.response(es.GetExecutionResponse).execution
            state = ex_pb.Execution.State.Name(execution.state)
            if state in _FINAL or time.monotonic() > deadline:
                return execution
            time.sleep(0.05)

    def events(self, name: str) -> Outcome:
        return self.call(
            EX + "ListExecutionEvents", es.ListExecutionEventsRequest(parent=name, page_size=1000)
        )

    # -- the canary scan -------------------------------------------------------------------
    def scan(self, needle: str | bytes) -> list[str]:
        """Where `needle` occurs: responses, events of every execution, logs, the database."""
        raw = needle if isinstance(needle, bytes) else needle.encode()
        text = raw.decode(errors="replace")
        hits: list[str] = []
        for outcome in self.outcomes:
            if text in outcome.message or any(raw in r for r in outcome.responses):
                hits.append(f"response of {outcome.method}")
        hits += [f"log: {line[:200]}" for line in self.logs.lines if text in line]
        hits += [f"database: {where}" for where in self.run(self._scan_database(raw))]
        return hits

    async def _scan_database(self, raw: bytes) -> list[str]:
        store = self.server.store
        found: list[str] = []
        if self.backend == "memory":
            return found  # nothing outlives the process
        if self.backend == "sqlite":
            path = Path(self.server.url.split("///", 1)[1])
            for part in (path, path.with_name(path.name + "-wal")):
                if part.exists() and raw in part.read_bytes():
                    found.append(part.name)
            return found
        async with store.database.connect() as conn:
            tables = await conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            for (table,) in tables.fetchall():
                rows = await conn.exec_driver_sql(f'SELECT t::text FROM "{table}" t')
                if any(raw.decode(errors="replace") in row[0] for row in rows.fetchall()):
                    found.append(table)
        return found


_FINAL = {f"STATE_{s}" for s in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")}


def _failed(method: str, exc: grpc.RpcError) -> Outcome:
    details: list[pb_message.Message] = []
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for packed in status.details:
            for kind in _DETAIL_TYPES.values():
                if packed.Is(kind.DESCRIPTOR):
                    detail = kind()
                    packed.Unpack(detail)
                    details.append(detail)
    return Outcome(method, exc.code(), exc.details() or "", details)


_PG: list[PgServer] = []


def _database_url(backend: str, tmp: Path) -> str:
    if backend == "memory":
        return "memory"
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp}/security.db"
    if not _PG:
        _PG.append(PgServer())
    return _PG[0].create_database()  # skips when PostgreSQL is unreachable


_LOGS = _LogBuffer()
_HARNESSES: list[Harness] = []


@pytest.fixture(scope="session", params=["memory", "sqlite", "postgresql"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """A running server on one backend, seeded with finished executions."""
    backend = request.param
    url = _database_url(backend, tmp_path_factory.mktemp(f"security-{backend}"))
    root = logging.getLogger()
    root.addHandler(_LOGS)
    server = _ServerThread(url)
    server.start()
    server.ready.wait(60)
    if server.error is not None:
        raise server.error
    probe = _Probe(server.port)
    probe.start()
    h = Harness(backend, server, probe, _LOGS)
    _HARNESSES.append(h)
    try:
        assert h.create_workflow(SEED).code == grpc.StatusCode.OK
        for n in range(3):
            started = h.start("seed", {"n": n}, request_id=f"seed-{uuid.uuid4().hex}")
            assert started.code == grpc.StatusCode.OK, str(started)
            name = started.response(es.StartExecutionResponse).execution.name
            h.wait_final(name)
            h.stored.append(name)
        yield h
    finally:
        probe.stop()
        h.channel.close()
        server.shutdown()
        root.removeHandler(_LOGS)
        if backend == "postgresql":
            _PG[0].drop_all()


@pytest.fixture(autouse=True)
def _server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each case: no crash, no stall, stored executions readable."""
    if "harness" not in request.fixturenames:
        yield
        return
    h: Harness = request.getfixturevalue("harness")
    h.probe.take_window()
    h.server.take_busy()
    yield
    assert h.server.is_alive(), "the server thread died"
    assert not h.probe.failures, f"health probe failed: {h.probe.failures[:3]}"
    stall = h.probe.take_window()
    busy = h.server.take_busy()
    h.case_stall = max(h.case_stall, stall)
    h.case_busy = max(h.case_busy, busy)
    h.stalls[request.node.name] = busy
    assert busy < MAX_STALL, (
        f"the server's loop computed {busy:.3f}s without yielding during this case "
        f"(the health probe waited up to {stall:.3f}s)"
    )
    for name in h.stored:
        got = h.call(EX + "GetExecution", es.GetExecutionRequest(name=name))
        assert got.code == grpc.StatusCode.OK, f"stored execution unreadable: {got}"
        events = h.events(name)
        assert events.code == grpc.StatusCode.OK, f"stored events unreadable: {events}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for h in _HARNESSES:
        terminalreporter.write_line(
            f"security[{h.backend}]: {sum(h.statuses.values())} calls, statuses "
            f"{dict(sorted(h.statuses.items()))}, health probe: {h.probe.checks} checks, "
            f"max wait during cases {h.case_stall * 1000:.0f} ms"
            f" (whole session {h.probe.max_wait * 1000:.0f} ms); the loop's longest run "
            f"without yielding during cases {h.case_busy * 1000:.0f} ms of CPU"
        )
        slowest = sorted(h.stalls.items(), key=lambda kv: -kv[1])[:5]
        terminalreporter.write_line(
            "  longest loop runs: "
            + ", ".join(f"{name} {busy * 1000:.0f} ms" for name, busy in slowest)
        )
