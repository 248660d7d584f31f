"""Acceptance (issue 15): remote workers against two `agentrun serve` replicas on PostgreSQL.

Real processes: two servers on one PostgreSQL database, Python workers (`agentrun.worker`,
tests/workers/worker_process.py) and a Node.js worker (tests/polyglot/worker.js, from the
.proto alone) connected to replica B, executions started on, and run by, replica A. A worker
killed with SIGKILL mid-call loses its call, which the node's retry policy runs again on
another worker; a worker stopped with SIGSTOP and resumed after its lease moved has its
answer refused, so no call is applied twice. Bad registrations get INVALID_ARGUMENT naming
the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentrun.client import Client, ExecutionState
from agentrun.v1 import worker_service_pb2 as pb
from agentrun.v1 import worker_service_pb2_grpc as pb_grpc
from tests.server.subprocess_server import ROOT, ServerProcess, start_all
from tests.storage.conftest import PgServer

pytestmark = pytest.mark.timeout(240)

HERE = Path(__file__).resolve().parent
POLYGLOT = ROOT / "tests" / "polyglot"
# Heartbeats every 0.3 s; a worker silent for 2 s loses its calls.
CONFIG = "workers: {heartbeat: 300ms, lease: 2s, poll: 300ms}\nlease: 5s\n"

WORKFLOW = """
name: polyglot-tools
nodes:
  - id: shout
    timeout: 60s
    retry: {max_attempts: 3, initial_interval: 10ms}
    tool: {name: py.upper, args: {text: "${{ input.text }}", stall_first: "${{ input.stall }}"}}
  - id: mirror
    needs: [shout]
    timeout: 60s
    retry: {max_attempts: 3, initial_interval: 10ms}
    tool: {name: node.reverse, args: {text: "${{ nodes.shout.output.upper }}"}}
"""

PY_ONLY = """
name: py-only
nodes:
  - id: shout
    timeout: 60s
    retry: {max_attempts: 3, initial_interval: 10ms}
    tool: {name: py.upper, args: {text: "${{ input.text }}", stall_first: "${{ input.stall }}"}}
"""


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Events:
    """A worker process's JSON lines (its events file, or its stdout for Node.js)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.all() if e.get("event") == kind]


class Cluster:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        (tmp / "config.yaml").write_text(CONFIG)
        self.replicas = {
            name: ServerProcess(
                _dir(tmp / name),
                db=url,
                env={"AGENTRUN_REPLICA_ID": name},
                args=["--config", str(tmp / "config.yaml")],
            )
            for name in ("a", "b")
        }
        start_all(list(self.replicas.values()))
        self.processes: list[subprocess.Popen[bytes]] = []

    def python_worker(
        self, name: str, replica: str = "b"
    ) -> tuple[subprocess.Popen[bytes], Events]:
        events = Events(self.tmp / f"{name}.events")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        address = self.replicas[replica].address
        with open(self.tmp / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(HERE / "worker_process.py"), address, str(events.path), "4"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        until(lambda: events.of("registered"), f"{name} registered")
        self.knows("a", "py.upper")
        return process, events

    def node_worker(self, replica: str = "b") -> tuple[subprocess.Popen[bytes], Events]:
        node = shutil.which("node")
        if node is None or not (POLYGLOT / "node_modules" / "@grpc" / "grpc-js").exists():
            pytest.skip(
                "node or tests/polyglot/node_modules missing (scripts/ensure-test-tools.sh)"
            )
        events = Events(self.tmp / "node.events")
        with open(events.path, "wb") as out:
            process = subprocess.Popen(
                [node, str(POLYGLOT / "worker.js"), self.replicas[replica].address],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        until(lambda: events.of("registered"), "the Node.js worker registered")
        self.knows("a", "node.reverse")
        return process, events

    def knows(self, replica: str, tool: str) -> None:
        """Waits until `replica` has heard of `tool` (a registration on the other replica
        reaches it by the store's notification, or its periodic reload)."""
        with Client(self.replicas[replica].address, api_key="") as client:
            source = (
                f"name: probe\nnodes:\n  - {{id: p, tool: {{name: {tool}, args: {{text: x}}}}}}\n"
            )
            until(
                lambda: client.validate_workflow(source=source).valid,
                f"{replica} to know {tool}",
                timeout=30,
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)
        for server in self.replicas.values():
            server.stop()


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    yield server
    server.drop_all()


@pytest.fixture
def cluster(tmp_path: Path, pg: PgServer) -> Iterator[Cluster]:
    url = pg.create_database(migrated=True)
    cluster = Cluster(tmp_path, url)
    try:
        yield cluster
    finally:
        cluster.stop()
        pg.release(url)


@pytest.fixture(scope="module")
def refusing_cluster(tmp_path_factory: pytest.TempPathFactory, pg: PgServer) -> Iterator[Cluster]:
    """One cluster for the cases that change nothing (refused registrations): starting two
    replicas per case cost more than the cases."""
    url = pg.create_database(migrated=True)
    cluster = Cluster(tmp_path_factory.mktemp("refusing"), url)
    try:
        yield cluster
    finally:
        cluster.stop()
        pg.release(url)


def workers_on(address: str) -> list[pb.Worker]:
    with grpc.insecure_channel(address) as channel:
        return list(
            pb_grpc.WorkerServiceStub(channel)
            .ListWorkers(pb.ListWorkersRequest(), timeout=10)
            .workers
        )


def node_succeeded_counts(client: Client, execution_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in client.list_execution_events(execution_id):
        if event.type == "node.succeeded":
            counts[event.node_id] = counts.get(event.node_id, 0) + 1
    return counts


def test_python_and_node_workers_on_replica_b_serve_an_execution_replica_a_runs(
    cluster: Cluster,
) -> None:
    _, py_events = cluster.python_worker("py1")
    _, node_events = cluster.node_worker()
    a = cluster.replicas["a"]
    listed = {w.display_name.split(":")[0]: w for w in workers_on(a.address)}  # asked of A
    assert set(listed) == {"py", "node"} and {w.replica for w in listed.values()} == {"b"}
    with Client(a.address, api_key="") as client:
        client.create_workflow(source=WORKFLOW)
        started = client.start_execution("polyglot-tools", {"text": "hello", "stall": 0})
        final = client.wait(started, timeout=60)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        nodes = {
            n.node_id: n.output for n in client.get_execution(started, include_nodes=True).nodes
        }
        assert (
            nodes["shout"]["upper"] == "HELLO"
            and nodes["shout"]["pid"] == py_events.of("registered")[0]["pid"]
        )
        assert final.output == {"mirror": nodes["mirror"]}
        assert nodes["mirror"]["reversed"] == "OLLEH" and nodes["mirror"]["worker"] == "node"
        assert node_succeeded_counts(client, started.id) == {"shout": 1, "mirror": 1}
    (py_call,) = py_events.of("call")
    (node_call,) = node_events.of("call")
    assert (
        py_call["key"] == f"{started.id}/shout/1" and node_call["key"] == f"{started.id}/mirror/1"
    )
    # A ran the execution; B's workers did the calls: the lease was A's throughout.
    assert _owner(a, started.id) == "a"


def _owner(server: ServerProcess, execution_id: str) -> str:
    import asyncio

    from agentrun.storage.sql import SqlStore

    async def read() -> str:
        store = SqlStore(server.db)
        await store.open()
        try:
            record = await store.get_execution(execution_id)
            assert record is not None
            return str(record.owner)
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_worker_killed_mid_call_has_its_call_retried_on_another_worker(cluster: Cluster) -> None:
    first, first_events = cluster.python_worker("py1")
    a = cluster.replicas["a"]
    with Client(a.address, api_key="") as client:
        client.create_workflow(source=PY_ONLY)
        started = client.start_execution("py-only", {"text": "kill", "stall": 120})
        until(lambda: first_events.of("call"), "the first worker's call")
        _, second_events = cluster.python_worker("py2")
        first.send_signal(signal.SIGKILL)  # mid-call: the stream breaks, the lease is lost
        first.wait(10)
        final = client.wait(started, timeout=90)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        (call,) = second_events.of("call")
        assert call["attempt"] == 2 and call["key"] == f"{started.id}/shout/2"
        assert final.output["shout"] == {
            "upper": "KILL",
            "pid": second_events.of("registered")[0]["pid"],
            "attempt": 2,
        }
        assert node_succeeded_counts(client, started.id) == {"shout": 1}
        retried = [e for e in client.list_execution_events(started.id) if e.type == "node.retrying"]
        assert len(retried) == 1 and "worker_lost" in json.dumps(retried[0].data)
    assert not first_events.of("answer")


def test_a_stopped_workers_late_answer_is_refused_and_never_applied(cluster: Cluster) -> None:
    first, first_events = cluster.python_worker("py1")
    a = cluster.replicas["a"]
    with Client(a.address, api_key="") as client:
        client.create_workflow(source=PY_ONLY)
        # The first attempt sleeps 4 s in the worker; the lease is 2 s without heartbeats.
        started = client.start_execution("py-only", {"text": "stop", "stall": 4})
        (call,) = until(lambda: first_events.of("call"), "the first worker's call")
        first.send_signal(signal.SIGSTOP)
        _, second_events = cluster.python_worker("py2")
        final = client.wait(started, timeout=90)
        assert final.state is ExecutionState.SUCCEEDED, final.error
        assert final.output["shout"]["attempt"] == 2
        assert final.output["shout"]["pid"] == second_events.of("registered")[0]["pid"]
        first.send_signal(signal.SIGCONT)  # wakes past its sleep: answers attempt 1 late
        (refused,) = until(lambda: first_events.of("refused"), "the late answer refused")
        assert refused["call_id"] == call["call_id"] and refused["reason"] in (
            "lease_lost",
            "unknown_call",
        )
        assert first_events.of("answer")  # it did answer; the server did not apply it
        time.sleep(1.0)  # anything the late answer could have changed has happened by now
        again = client.get_execution(started.id, include_nodes=True)
        assert again.state is ExecutionState.SUCCEEDED and again.output == final.output
        applied_twice = [
            n for n, count in node_succeeded_counts(client, started.id).items() if count > 1
        ]
        assert applied_twice == []
        (node,) = again.nodes
        assert node.attempt == 2 and node.output == final.output["shout"]


def _tool(name: str, args_schema: dict[str, Any]) -> pb.WorkerTool:
    tool = pb.WorkerTool(name=name)
    tool.args_schema.update(args_schema)
    return tool


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ([pb.WorkerTool(name="")], "register.tools[0].name"),
        ([pb.WorkerTool(name="x.dup"), pb.WorkerTool(name="x.dup")], "register.tools[1].name"),
        ([_tool("x.schema", {"type": 12})], "register.tools[0].args_schema.type"),
    ],
    ids=["empty-name", "duplicate", "bad-schema"],
)
def test_bad_registrations_are_invalid_argument_naming_the_field(
    refusing_cluster: Cluster, tools: list[pb.WorkerTool], field: str
) -> None:
    with grpc.insecure_channel(refusing_cluster.replicas["b"].address) as channel:
        stream = pb_grpc.WorkerServiceStub(channel).Connect(
            iter(
                [pb.ConnectRequest(register=pb.RegisterWorker(tools=tools, max_concurrent_calls=1))]
            ),
            timeout=20,
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
