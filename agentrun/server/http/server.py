"""The HTTP port: the agentrun services over Connect (JSON and binary, unary and server
streams) and gRPC-Web, and the web console's files at `/`.

It runs in the gRPC server's asyncio loop (uvicorn, embedded), over the same engine and the
same servicers and interceptors (see `bridge`). Paths `/<package>.<Service>/<Method>` are RPCs;
every other path is the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf.message import Message

from agentrun.server.http.bridge import connect_endpoints
from agentrun.server.http.static import StaticFiles

if TYPE_CHECKING:
    from agentrun.server.app import AgentrunServer

log = logging.getLogger("agentrun.server.http")


class ConnectApp(ConnectASGIApplication[Any]):
    """connectrpc's ASGI app over a fixed set of endpoints (all services at once)."""

    def __init__(self, endpoints: dict[str, Endpoint[Any, Any]], *, read_max_bytes: int) -> None:
        super().__init__(
            service=endpoints,
            endpoints=lambda served: served,
            read_max_bytes=read_max_bytes,
            codecs=[google_protobuf_binary_codec(), StrictJsonCodec()],
        )

    @property
    def path(self) -> str:
        return "/"


class StrictJsonCodec:
    """Connect's JSON codec (proto3 JSON mapping), compact, and strict about field names: a
    misspelt field is INVALID_ARGUMENT naming it, not silently dropped."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        message = message_class()
        json_format.Parse(bytes(data), message, ignore_unknown_fields=False)
        return message


class HttpApp:
    """The ASGI app of the HTTP port: RPC paths to Connect, the rest to the console."""

    def __init__(self, server: AgentrunServer, *, console: StaticFiles | None = None) -> None:
        # The registry's handlers are wrapped by the server's interceptors already.
        endpoints = connect_endpoints(server.registry.handlers, ())
        self.rpc_paths = frozenset(endpoints)
        self.connect = ConnectApp(endpoints, read_max_bytes=server.config.max_message_bytes)
        self.console = console or StaticFiles()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan, no websockets
        path = scope["path"]
        if path in self.rpc_paths or _looks_like_rpc(path):
            if _is_plain_grpc(scope):
                await _refuse_grpc(send)
            else:
                await self.connect(scope, receive, send)  # unknown methods: Connect's 404
        else:
            await self.console(scope, receive, send)


def _looks_like_rpc(path: str) -> bool:
    service, _, method = path.lstrip("/").partition("/")
    return "." in service and bool(method) and "/" not in method


def _is_plain_grpc(scope: dict[str, Any]) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return value.startswith(b"application/grpc") and not value.startswith(
                b"application/grpc-web"
            )
    return False


async def _refuse_grpc(send: Any) -> None:
    """gRPC needs HTTP/2 trailers, which this HTTP/1.1 port has not: point to the gRPC port."""
    body = b"gRPC is served on the gRPC port (--listen); this port speaks Connect and gRPC-Web\n"
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"accept-post", b"application/json, application/proto, application/grpc-web"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside agentrun's loop: `agentrun serve` owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Starts and stops the HTTP port next to an `AgentrunServer`."""

    def __init__(self, server: AgentrunServer, *, console: StaticFiles | None = None) -> None:
        self.app = HttpApp(server, console=console)
        self._config = server.config
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._address = ""
        self.port = 0

    def bind(self, listen: str | None = None) -> int:
        """Takes the port (before `serve` opens the store, as the gRPC port does; calls that
        arrive before `start` wait in the backlog); returns it. OSError if it cannot."""
        self._address = listen or self._config.http_listen or "127.0.0.1:8080"
        self._socket = _bind(self._address)
        self.port = self._socket.getsockname()[1]
        return self.port

    async def start(self, listen: str | None = None) -> int:
        """Binds (unless `bind` did) and serves; returns the port (useful with `127.0.0.1:0`)."""
        if self._socket is None:
            self.bind(listen)
        sock = self._socket
        assert sock is not None
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,  # the access log is the interceptor's, as for gRPC
            server_header=False,
            proxy_headers=False,
            limit_concurrency=self._config.max_concurrent_rpcs,
            timeout_graceful_shutdown=max(1, round(self._config.shutdown_grace)),
        )
        # uvicorn's own start/stop lines ("Started server process") would describe a process
        # that is not its own; its warnings and errors still show.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._uvicorn = _EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name="http")
        host = self._address.rpartition(":")[0] or "127.0.0.1"
        log.info("agentrun HTTP (Connect, gRPC-Web, console) on http://%s:%d/", host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stops accepting, ends idle connections, and waits up to `grace` for calls in flight
        (the gRPC server's drain has already ended the watch streams)."""
        if self._uvicorn is None or self._task is None:
            if self._socket is not None:  # bound, never started
                self._socket.close()
                self._socket = None
            return
        if grace is not None:
            self._uvicorn.config.timeout_graceful_shutdown = max(0, round(grace))
        self._uvicorn.should_exit = True
        if grace == 0:
            self._uvicorn.force_exit = True
        try:
            await self._task
        finally:
            self._uvicorn = None
            self._task = None
            self._socket = None


def _bind(address: str) -> socket.socket:
    """The listening socket. Its protocol is set to TCP explicitly: asyncio turns Nagle off
    (TCP_NODELAY) only on connections from a socket that says so, and without it every
    keep-alive request waits ~40 ms for the client's delayed ACK between the response's
    header and body writes."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise OSError(f"cannot listen on {address}: not HOST:PORT") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, number))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"{address} is already in use (another agentrun serve?)") from None
        raise OSError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
