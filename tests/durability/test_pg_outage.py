"""PostgreSQL goes away mid-run: a private server is stopped (`pg_ctl stop -m fast`) for a while,
then started again, then its backends are killed with pg_terminate_backend in a loop. The
`agentrun serve` process survives, answers UNAVAILABLE (never UNKNOWN or INTERNAL) while the
database is down, works again after, and every execution completes with the ledger invariants.

Issue 7 acceptance: 15 s down (slow); the default run stops it for 5 s.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentrun.v1 import execution_service_pb2 as es_pb
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from tests.durability.common import (
    Replica,
    check_event_logs,
    children,
    read_snapshot,
    run_sync,
    wait_finished,
    wait_until,
)
from tests.durability.grpc_util import create_workflow, start_executions
from tests.durability.ledger import Ledger, check, mark, steps_workflow
from tests.durability.pg import PrivatePostgres

STEPS = 20


async def probe(address: str, execution_id: str, request_id: str) -> list[str]:
    """One GetExecution, ListExecutions and StartExecution, without client retries: their codes."""
    codes = []
    async with grpc.aio.insecure_channel(address, options=[("grpc.enable_retries", 0)]) as channel:
        stub = es_grpc.ExecutionServiceStub(channel)
        calls = [
            stub.GetExecution(
                es_pb.GetExecutionRequest(name=f"executions/{execution_id}"), timeout=15
            ),
            stub.ListExecutions(es_pb.ListExecutionsRequest(page_size=10), timeout=15),
            stub.StartExecution(
                es_pb.StartExecutionRequest(workflow="workflows/steps", request_id=request_id),
                timeout=15,
            ),
        ]
        for call in calls:
            try:
                await call
                codes.append("OK")
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
    return codes


def outage(
    workdir: Path,
    pg: PrivatePostgres,
    *,
    executions: int,
    down: float,
    terminate_for: float,
    replicas: int,
) -> dict[str, Any]:
    ledger = workdir / "ledger.txt"
    servers = [Replica(workdir, pg.url, name, ledger, lease=3.0) for name in "ab"[:replicas]]
    with children() as procs:
        for s in servers:
            procs.append(s.start())
        for s in servers:
            s.wait_ready()
        addresses = [s.address for s in servers]
        run_sync(create_workflow(addresses, steps_workflow("steps", STEPS, 0.1)))
        ids = run_sync(start_executions(addresses, "steps", executions))
        wait_until(
            lambda: sum(e.kind == "done" for e in Ledger.read(ledger).entries) >= executions * 3,
            60,
            "some progress",
        )

        pg.stop("fast")
        stopped = time.monotonic()
        mark(ledger, "postgres stopped")
        down_codes: Counter[str] = Counter()
        n = 0
        while time.monotonic() - stopped < down:
            for s in servers:
                n += 1
                down_codes.update(run_sync(probe(s.address, ids[0], f"during-outage-{n}")))
            time.sleep(0.5)
        assert all(s.child.alive for s in servers), "a server died while PostgreSQL was down"
        pg.start()
        mark(ledger, "postgres started")
        started = time.monotonic()

        # Works again: the first calls may meet pooled connections that died with the server.
        def healthy() -> bool:
            return all(
                run_sync(probe(s.address, ids[0], "after-outage")) == ["OK"] * 3 for s in servers
            )

        wait_until(healthy, 20, "the servers to answer again", interval=0.2)
        recovered = time.monotonic() - started
        after_codes: Counter[str] = Counter()
        for _ in range(3):
            for s in servers:
                after_codes.update(run_sync(probe(s.address, ids[0], "after-outage")))

        # Backends killed again and again while the work goes on.
        killed = 0
        kill_until = time.monotonic() + terminate_for
        while time.monotonic() < kill_until:
            killed += pg.terminate_backends()
            time.sleep(0.3)
        mark(ledger, "terminations over")
        assert all(s.child.alive for s in servers), "a server died while its backends were killed"

        wait_finished(
            pg.url, 90 + executions, logs=lambda: {s.name: s.child.log.read_text() for s in servers}
        )
        for s in servers:
            s.stop()
    final = read_snapshot(pg.url, events=True)
    ours = {i: row for i, row in final.executions.items()}
    assert all(row["state"] == "SUCCEEDED" for row in ours.values()), final.states()
    # The probes' starts during the outage failed; the one after it (one request id) started once.
    requests = Counter(row["request_id"] for row in final.executions.values())
    assert requests["after-outage"] == 1 and not any(
        r.startswith("during-outage") for r in requests if r
    )
    expected = {
        f"{e}/s{i}"
        for e in ours
        for i in range(STEPS)
        if final.executions[e]["request_id"].startswith("job-")
    }
    outputs = {k: v for k, v in final.outputs().items() if k.split("/")[0] in ours}
    report = check(Ledger.read(ledger), outputs, expected)
    report.assert_ok()
    check_event_logs(final)
    return {
        "report": report,
        "down_codes": down_codes,
        "after_codes": after_codes,
        "recovered": recovered,
        "terminated": killed,
    }


def _check(result: dict[str, Any]) -> None:
    print(result["report"].summary())
    print(
        f"while down: {dict(result['down_codes'])}; answering again {result['recovered']:.2f}s after the "
        f"restart; after: {dict(result['after_codes'])}; backends terminated: {result['terminated']}"
    )
    assert set(result["down_codes"]) == {"UNAVAILABLE"}, result["down_codes"]
    assert set(result["after_codes"]) == {"OK"}, result["after_codes"]
    assert result["terminated"] > 0


@pytest.mark.timeout(180)
def test_postgres_down_5s_and_backends_killed(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    _check(outage(tmp_path, private_pg, executions=30, down=5, terminate_for=3, replicas=1))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_postgres_down_15s_two_replicas_backends_killed(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    _check(outage(tmp_path, private_pg, executions=100, down=15, terminate_for=10, replicas=2))
