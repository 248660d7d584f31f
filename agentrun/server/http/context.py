"""A `grpc.aio.ServicerContext` look-alike for calls that arrive over HTTP (Connect, gRPC-Web).

The servicers and the interceptors (auth, rate limits, draining, errors, telemetry, access log)
are written against grpc.aio's context: they read the metadata, the peer and the deadline, and
end a call with `abort`/`abort_with_status`. This class gives them the same surface over a
connectrpc `RequestContext`, so an HTTP call runs through exactly the code a gRPC call does.
An abort raises `grpc.aio.AbortError` as grpc.aio's does (the error interceptor lets it
through), and the status it carried becomes the Connect error (`to_connect_error`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.rpc import status_pb2

from agentrun.server.http.details import connect_details

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# grpc.StatusCode -> Connect code: the same names, but for CANCELLED (Connect: canceled).
CONNECT_CODES: dict[grpc.StatusCode, Code] = {
    code: Code.CANCELED if code is grpc.StatusCode.CANCELLED else Code[code.name]
    for code in grpc.StatusCode
    if code is not grpc.StatusCode.OK
}

Metadata = tuple[tuple[str, str], ...]


class HttpServicerContext:
    """The servicer context of one HTTP call (the subset of grpc.aio's that agentrun uses)."""

    __slots__ = ("_code", "_ctx", "_details", "_metadata", "_peer", "_trailing", "writes")

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        # gRPC metadata keys are lower case; HTTP headers are case-insensitive.
        self._metadata: Metadata = tuple(
            (key.lower(), value) for key, value in ctx.request_headers.allitems()
        )
        self._peer = _peer(ctx.client_address)
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Sequence[tuple[str, str | bytes]] = ()
        # Where `write` puts a write-style streaming servicer's messages (set by the bridge).
        self.writes: asyncio.Queue[Any] | None = None

    # -- what the call carries ---------------------------------------------------------------

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else max(0.0, remaining / 1000.0)

    def auth_context(self) -> dict[str, Any]:
        return {}

    def cancelled(self) -> bool:
        # A client that goes away cancels the handler's task (connectrpc watches for it).
        return False

    def done(self) -> bool:
        return self._code is not None

    # -- how it ends -------------------------------------------------------------------------

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, str]]) -> None:
        for key, value in initial_metadata:
            self._ctx.response_headers.add(key, value)

    async def write(self, message: Any) -> None:
        if self.writes is None:
            raise RuntimeError("write() is only for server-streaming methods")
        await self.writes.put(message)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        self._code = code
        self._details = details
        self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError(f"{code.name}: {details}")

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    # -- for the bridge ----------------------------------------------------------------------

    def to_connect_error(self) -> ConnectError:
        """The Connect error for the status the call ended with: the same code, message and
        `google.rpc.Status` details (ErrorInfo, BadRequest, ...) a gRPC caller gets."""
        code = self._code if self._code is not None else grpc.StatusCode.UNKNOWN
        status = status_pb2.Status()
        for key, value in self._trailing:
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                status.ParseFromString(value)
        return ConnectError(
            CONNECT_CODES.get(code, Code.UNKNOWN),
            status.message or self._details,
            connect_details(status.details),
        )


def _peer(address: str | None) -> str:
    """grpc's form of the client's address: `ipv4:1.2.3.4:5678` or `ipv6:[::1]:5678`."""
    if not address:
        return "unknown"
    host, _, port = address.rpartition(":")
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
