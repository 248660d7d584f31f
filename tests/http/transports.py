"""One call interface over two transports, for the parity test: `GrpcTransport` calls a
method with grpc.aio, `ConnectTransport` with Connect JSON over plain HTTP. Both take the
request as a JSON mapping and return the response as one (`MessageToDict`'s form, which is
what the Connect JSON is), or a `Failure`: the status code name and every google.rpc detail
as JSON."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2  # noqa: F401 - registers the detail types
from grpc_status import rpc_status

from tests.http.conftest import envelope


@dataclass(frozen=True)
class Failure:
    code: str  # grpc.StatusCode name
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)  # {"@type": ..., fields}


def _classes(path: str) -> tuple[type, type]:
    service, _, name = path.lstrip("/").rpartition("/")
    method = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


def _detail_json(type_url: str, value: bytes) -> dict[str, Any]:
    packed = any_pb2.Any(type_url=type_url, value=value)
    return json_format.MessageToDict(packed, descriptor_pool=descriptor_pool.Default())


Result = dict[str, Any] | list[dict[str, Any]] | Failure


class GrpcTransport:
    name = "grpc"

    def __init__(self, channel: grpc.aio.Channel, key: str | None = None) -> None:
        self.channel = channel
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()

    async def call(self, path: str, request: dict[str, Any]) -> Result:
        req_class, resp_class = _classes(path)
        method = self.channel.unary_unary(
            path,
            request_serializer=req_class.SerializeToString,
            response_deserializer=resp_class.FromString,
        )
        try:
            response = await method(
                json_format.ParseDict(request, req_class()), metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            return self._failure(exc)
        return json_format.MessageToDict(response)

    async def stream(self, path: str, request: dict[str, Any], limit: int = 0) -> Result:
        """The stream's messages to its end (or the first `limit` of them)."""
        req_class, resp_class = _classes(path)
        method = self.channel.unary_stream(
            path,
            request_serializer=req_class.SerializeToString,
            response_deserializer=resp_class.FromString,
        )
        out: list[dict[str, Any]] = []
        call = method(json_format.ParseDict(request, req_class()), metadata=self.metadata)
        try:
            async for response in call:
                out.append(json_format.MessageToDict(response))
                if len(out) == limit:
                    call.cancel()
                    break
        except grpc.aio.AioRpcError as exc:
            return self._failure(exc)
        return out

    @staticmethod
    def _failure(exc: grpc.aio.AioRpcError) -> Failure:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        details = [_detail_json(d.type_url, d.value) for d in status.details] if status else []
        return Failure(exc.code().name, exc.details() or "", details)


# Connect code -> gRPC code name
_CODES = {c.name.lower(): c.name for c in grpc.StatusCode} | {"canceled": "CANCELLED"}


class ConnectTransport:
    name = "connect"

    def __init__(self, client: httpx.AsyncClient, key: str | None = None) -> None:
        self.client = client
        self.headers = {"authorization": f"Bearer {key}"} if key else {}

    async def call(self, path: str, request: dict[str, Any]) -> Result:
        response = await self.client.post(
            path,
            content=json.dumps(request),
            headers={"content-type": "application/json", **self.headers},
        )
        body = response.json()
        if response.status_code != 200:
            return self._failure(body)
        assert isinstance(body, dict)
        return body

    async def stream(self, path: str, request: dict[str, Any], limit: int = 0) -> Result:
        """The stream's messages to its end (or the first `limit` of them: then the client
        disconnects, as a browser that leaves the page)."""
        out: list[dict[str, Any]] = []
        async with self.client.stream(
            "POST",
            path,
            content=envelope(json.dumps(request).encode()),
            headers={"content-type": "application/connect+json", **self.headers},
        ) as response:
            assert response.status_code == 200
            buffer = b""
            async for chunk in response.aiter_bytes():
                buffer += chunk
                while len(buffer) >= 5:
                    flags, size = struct.unpack(">BI", buffer[:5])
                    if len(buffer) < 5 + size:
                        break
                    payload, buffer = buffer[5 : 5 + size], buffer[5 + size :]
                    if flags & 0x02:
                        end = json.loads(payload)
                        return self._failure(end["error"]) if "error" in end else out
                    out.append(json.loads(payload))
                    if len(out) == limit:
                        return out
        raise AssertionError("no end of stream")

    @staticmethod
    def _failure(error: dict[str, Any]) -> Failure:
        details = []
        for detail in error.get("details", []):
            raw = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
            decoded = _detail_json("type.googleapis.com/" + detail["type"], raw)
            # The readable copy says the same as the bytes.
            assert {"@type": decoded["@type"], **detail.get("debug", {})} == decoded
            details.append(decoded)
        return Failure(_CODES[error["code"]], error.get("message", ""), details)
