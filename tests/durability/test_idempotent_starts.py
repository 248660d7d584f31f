"""1,000 concurrent StartExecution calls spread over three `agentrun serve` replicas on one
PostgreSQL, with 100 distinct request ids (ten calls each, same payload): exactly 100
executions exist, every call for one request id got the same execution, and all of them run
to the end once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from agentrun.v1 import execution_service_pb2 as es_pb
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from tests.durability.common import (
    Replica,
    check_event_logs,
    children,
    read_snapshot,
    run_sync,
    serve_all,
    wait_finished,
)
from tests.durability.ledger import Ledger, check, steps_workflow
from tests.durability.pg import PrivatePostgres

STEPS = 2


async def storm(
    addresses: list[str], calls: int, ids: int
) -> tuple[dict[str, set[str]], dict[str, int]]:
    # Several connections per replica, as many clients would open: each stays under the
    # server's max_concurrent_streams (256), beyond which streams are refused (UNAVAILABLE).
    options = [("grpc.enable_retries", 0), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(a, options=options) for _ in range(4) for a in addresses]
    stubs = [es_grpc.ExecutionServiceStub(c) for c in channels]
    got: dict[str, set[str]] = defaultdict(set)
    codes: dict[str, int] = defaultdict(int)
    details: dict[str, int] = defaultdict(int)
    start = asyncio.Event()

    async def call(n: int) -> None:
        key = n % ids
        payload = struct_pb2.Value()
        payload.struct_value.update({"k": key})
        request = es_pb.StartExecutionRequest(
            workflow="workflows/once", input=payload, request_id=f"req-{key}"
        )
        await start.wait()  # all at once
        for attempt in range(5):
            try:
                response = await stubs[(n + attempt) % len(stubs)].StartExecution(
                    request, timeout=60
                )
                got[f"req-{key}"].add(response.execution.name)
                codes["OK"] += 1
                return
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                details[exc.details()] += 1
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    return
                await asyncio.sleep(0.1 * 2**attempt)  # as the SDK's retry policy does

    try:
        # Connected first: a client that has the server's SETTINGS keeps to its stream limit
        # (max_concurrent_streams); a burst on a fresh connection gets REFUSED_STREAM instead.
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        tasks = [asyncio.create_task(call(n)) for n in range(calls)]
        await asyncio.sleep(0.1)
        start.set()
        await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()
    if details:
        print("errors:", dict(details))
    return got, codes


@pytest.mark.timeout(120)
def test_1000_concurrent_starts_100_request_ids_3_replicas(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    # A server of its own: three replicas may open 3 x 31 connections in a burst, more than the
    # shared server's max_connections (100) leaves to one test.
    pg_url = private_pg.url
    ledger = tmp_path / "ledger.txt"
    replicas = [Replica(tmp_path, pg_url, name, ledger, lease=5.0) for name in ("a", "b", "c")]
    with children() as procs:
        addresses = serve_all(procs, replicas, steps_workflow("once", STEPS, 0.0))
        got, codes = run_sync(storm(addresses, 1000, 100))
        wait_finished(pg_url, 60, logs=lambda: {r.name: r.child.log.read_text() for r in replicas})
        for r in replicas:
            r.stop()
    print(f"responses: {dict(codes)}")
    assert codes["OK"] == 1000 and set(codes) <= {"OK", "UNAVAILABLE"}, dict(codes)
    assert len(got) == 100 and all(len(names) == 1 for names in got.values()), {
        k: v for k, v in got.items() if len(v) != 1
    }
    final = read_snapshot(pg_url, events=True)
    assert len(final.executions) == 100
    assert sorted(row["request_id"] for row in final.executions.values()) == sorted(
        f"req-{k}" for k in range(100)
    )
    assert {n.split("/", 1)[1] for names in got.values() for n in names} == set(final.executions)
    assert all(row["state"] == "SUCCEEDED" for i, row in final.executions.items())
    report = check(Ledger.read(ledger), final.outputs(), final.expected_keys(STEPS))
    report.assert_ok()
    assert report.extra_runs == 0, "no replica was killed: every step ran exactly once"
    check_event_logs(final)
