"""Hostile credentials: whatever a caller puts in its metadata, a call without a valid key
answers UNAUTHENTICATED (never INTERNAL or UNKNOWN: tests/conftest.py), and a valid key still
works after them."""

from __future__ import annotations

import grpc
import pytest

from agentrun.server import AgentrunServer
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc

BAD_METADATA = {
    "empty-bearer": (("authorization", "Bearer "),),
    "basic": (("authorization", "Basic a2V5LWFjbWU6"),),
    "no-scheme": (("authorization", "key-acme"),),
    "lowercase-scheme": (("authorization", "bearer nope"),),
    "huge-key": (("authorization", "Bearer " + "k" * 6000),),
    "huge-x-api-key": (("x-api-key", "k" * 6000),),
    "two-keys-one-bad": (("authorization", "Bearer nope"), ("x-api-key", "nope2")),
    "binary-header": (("authorization-bin", b"\xff\x00\xfe"),),
    "spaces": (("authorization", "Bearer    "),),
    "sql": (("authorization", "Bearer ' OR 1=1 --"),),
}


@pytest.mark.parametrize("name", list(BAD_METADATA))
async def test_bad_credentials_are_unauthenticated(auth_server: AgentrunServer, name: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        stub = es_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListExecutions(es.ListExecutionsRequest(), metadata=BAD_METADATA[name])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
        good = (("authorization", "Bearer key-acme"),)
        await stub.ListExecutions(es.ListExecutionsRequest(), metadata=good)
