"""ListExecutions' order and creation-time window through real gRPC: newest first pages by
token without gaps or repeats, the window is half-open, a token is bound to the order and
window it was issued under, and bad values are INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agentrun.client import AsyncClient
from agentrun.client.errors import from_rpc_error
from agentrun.server import AgentrunServer
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from tests.server.conftest import ECHO_CHAIN

pytestmark = pytest.mark.timeout(120)

NEWEST = es.EXECUTION_ORDER_NEWEST_FIRST


async def _pages(stub: es_grpc.ExecutionServiceStub, **fields: object) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        response = await stub.ListExecutions(es.ListExecutionsRequest(page_token=token, **fields))  # type: ignore[arg-type]
        pages.append([e.name for e in response.executions])
        token = response.next_page_token
        if not token:
            return pages


def flat(pages: list[list[str]]) -> list[str]:
    return [name for page in pages for name in page]


async def _field_of_refusal(
    stub: es_grpc.ExecutionServiceStub, request: es.ListExecutionsRequest
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListExecutions(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    error = from_rpc_error(caught.value)
    assert len(error.violations) == 1, error.violations
    return error.violations[0].field


async def test_newest_first_and_time_window(server: AgentrunServer, client: AsyncClient) -> None:
    await client.create_workflow(source=ECHO_CHAIN.format(name="chain"))
    started = []
    for _ in range(7):
        started.append(await client.start_execution("chain", {}))
        await asyncio.sleep(0.005)  # distinct creation times (ms ids, float seconds)
    names = [e.name for e in started]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = es_grpc.ExecutionServiceStub(channel)
        listed = await stub.ListExecutions(es.ListExecutionsRequest(page_size=100))
        times = {e.name: e.create_time for e in listed.executions}
        assert [e.name for e in listed.executions] == names  # oldest first, as before

        pages = await _pages(stub, page_size=3, order=NEWEST)
        assert [len(p) for p in pages] == [3, 3, 1]
        assert flat(pages) == names[::-1]
        oldest = await _pages(stub, page_size=3, order=es.EXECUTION_ORDER_OLDEST_FIRST)
        assert flat(oldest) == names

        # [created_after, created_before): the 2nd to the 5th execution, both orders, paged.
        window = {"created_after": times[names[1]], "created_before": times[names[5]]}
        assert flat(await _pages(stub, page_size=2, order=NEWEST, **window)) == names[4:0:-1]
        assert flat(await _pages(stub, page_size=2, **window)) == names[1:5]
        after_all = Timestamp(seconds=times[names[-1]].seconds + 60)
        assert await _pages(stub, created_after=after_all) == [[]]

        # A token is bound to its order and window: reusing it under another is refused.
        first = await stub.ListExecutions(es.ListExecutionsRequest(page_size=2, order=NEWEST))
        for changed in (
            es.ListExecutionsRequest(page_size=2, page_token=first.next_page_token),
            es.ListExecutionsRequest(
                page_size=2,
                page_token=first.next_page_token,
                order=NEWEST,
                created_after=times[names[0]],
            ),
        ):
            assert await _field_of_refusal(stub, changed) == "page_token"


async def test_bad_values_name_their_field(server: AgentrunServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = es_grpc.ExecutionServiceStub(channel)
        cases = {
            "created_after": es.ListExecutionsRequest(created_after=Timestamp(seconds=10**12)),
            "created_before": es.ListExecutionsRequest(
                created_before=Timestamp(seconds=0, nanos=-1)
            ),
            "order": es.ListExecutionsRequest(order=7),  # type: ignore[arg-type]
        }
        for field, request in cases.items():
            assert await _field_of_refusal(stub, request) == field
        inverted = es.ListExecutionsRequest(
            created_after=Timestamp(seconds=2_000_000_000),
            created_before=Timestamp(seconds=1_000_000_000),
        )
        assert await _field_of_refusal(stub, inverted) == "created_before"
        empty = es.ListExecutionsRequest(
            created_after=Timestamp(seconds=2_000_000_000),
            created_before=Timestamp(seconds=2_000_000_000),
        )
        assert await _field_of_refusal(stub, empty) == "created_before"
