"""A small real HTTP/1.1 server on 127.0.0.1 for the tests (one request per connection).

Handlers get a Request and return a Response whose body is bytes or an async iterator of
chunks (sent as they come, for server-sent events). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            json.dumps(value).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )


Handler = Callable[[Request], Awaitable[Response]]
_REASONS = {
    200: "OK",
    301: "Moved",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Unavailable",
}


class HttpServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1", ssl: Any = None) -> None:
        self.handler = handler
        self.ssl = ssl
        self.host = host
        self.requests: list[Request] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, target, headers, body)
            self.requests.append(request)
            response = await self.handler(request)
            out = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'X')}"]
            hdrs = {"Connection": "close", **response.headers}
            if isinstance(response.body, bytes):
                hdrs.setdefault("Content-Length", str(len(response.body)))
            out += [f"{k}: {v}" for k, v in hdrs.items()]
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if isinstance(response.body, bytes):
                writer.write(response.body)
            else:
                async for chunk in response.body:
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
