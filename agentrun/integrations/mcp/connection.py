"""One MCP session per configured server, shared by every call, reopened when it breaks.

Runs on the MCP loop (`loop.LoopThread`). A session is opened by an owner task that enters the
SDK's `Client` and holds it until told to close: anyio requires the task that entered a
transport to be the one that leaves it. When the server process dies or the HTTP session is
lost, the calls in flight fail with `ConnectionLost`; the session is dropped and the next call
opens a new one (a new process for a stdio server). A session that sat idle is pinged before
its next call, so a server that died meanwhile is replaced before the call is sent instead of
failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from agentrun.integrations.mcp.config import ServerSpec

log = logging.getLogger("agentrun.integrations.mcp")

# A session unused for this long is pinged before the next call.
IDLE_CHECK_SECONDS = 5.0

# Progress of one call: (progress, total, message).
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


class ConnectionLost(Exception):
    """The session broke (process gone, HTTP session dropped) or could not be opened."""


class ServerError(Exception):
    """The server answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Connection:
    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._client: Any = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        # How many sessions were opened: 1 after the first, +1 per reconnect.
        self.opened = 0
        self._last_used = 0.0

    async def list_tools(self) -> list[Any]:
        client = await self._session()
        tools: list[Any] = []
        cursor: str | None = None
        for _ in range(1000):  # a server whose cursor never ends cannot hang the start
            page = await self._request(
                client, client.list_tools(cursor=cursor, cache_mode="refresh")
            )
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        meta: Mapping[str, Any],
        progress: ProgressFn | None,
    ) -> Any:
        client = await self._session()
        return await self._request(
            client,
            client.call_tool(name, dict(arguments), progress_callback=progress, meta=dict(meta)),
        )

    async def close(self) -> None:
        lock = self._lock or asyncio.Lock()
        async with lock:
            await self._drop()

    # ---------------------------------------------------------------- sessions
    async def _forget(self, client: Any) -> None:
        """Drops the session `client` belongs to, unless another call already replaced it."""
        assert self._lock is not None
        async with self._lock:
            if self._client is client:
                await self._drop()

    async def _session(self) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is not None and self._owner is not None and not self._owner.done():
                if await self._alive(self._client):
                    return self._client
            await self._drop()
            return await self._open()

    async def _alive(self, client: Any) -> bool:
        """False when an idle session no longer answers (its server died meanwhile). The probe
        is a tools/list: MCP 2026-07-28 removed ping, and every server answers this one."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_used < IDLE_CHECK_SECONDS:
            return True
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                await client.list_tools(cache_mode="refresh")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("%s: idle session is gone (%s); reconnecting", self.spec.where, _describe(exc))
            return False
        self._last_used = loop.time()
        return True

    async def _open(self) -> Any:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = loop.create_future()
        stop = asyncio.Event()
        owner = loop.create_task(self._own(ready, stop), name=f"mcp:{self.spec.name}")
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                client = await asyncio.shield(ready)
        except TimeoutError:
            stop.set()
            owner.cancel()
            raise ConnectionLost(
                f"{self.spec.where} did not answer within {self.spec.connect_timeout:g}s"
            ) from None
        except ConnectionLost:
            raise
        except Exception as exc:
            raise ConnectionLost(f"cannot connect to {self.spec.where}: {_describe(exc)}") from None
        self._client, self._owner, self._stop = client, owner, stop
        self._last_used = loop.time()
        self.opened += 1
        if self.opened > 1:
            log.info("%s: reconnected (session %d)", self.spec.where, self.opened)
        return client

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp import Client

        try:
            async with _transport(self.spec) as transport:
                async with Client(transport, cache=None) as client:
                    ready.set_result(client)
                    await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    ConnectionLost(f"cannot connect to {self.spec.where}: {_describe(exc)}")
                )
            else:
                log.warning("%s: session ended: %s", self.spec.where, _describe(exc))

    async def _drop(self) -> None:
        owner, stop = self._owner, self._stop
        self._client = self._owner = self._stop = None
        if owner is None or stop is None:
            return
        stop.set()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(owner)
        except (TimeoutError, Exception):
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def _request(self, client: Any, call: Awaitable[Any]) -> Any:
        """Awaits one request; a broken session is dropped (the next request reopens it)."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            result = await call
            self._last_used = asyncio.get_running_loop().time()
            return result
        except asyncio.CancelledError:
            raise
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise ServerError(exc.code, exc.message, exc.data) from None
            lost: BaseException = exc
        except Exception as exc:  # transport errors: the session cannot be trusted any more
            lost = exc
        await self._forget(client)
        raise ConnectionLost(f"{self.spec.where}: connection lost: {_describe(lost)}")


@contextlib.asynccontextmanager
async def _transport(spec: ServerSpec) -> AsyncIterator[Any]:
    """The SDK transport for `spec`: a stdio subprocess or a streamable HTTP endpoint."""
    if spec.command is not None:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(
            command=spec.command, args=list(spec.args), env=dict(spec.env) or None, cwd=spec.cwd
        )
        yield stdio_client(params, errlog=_errlog())
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert spec.url is not None
    timeout = httpx2.Timeout(spec.connect_timeout, read=300.0)
    async with httpx2.AsyncClient(headers=dict(spec.headers), timeout=timeout) as http:
        yield streamable_http_client(spec.url, http_client=http)


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours, when it is a real file (the child needs a
    descriptor; a captured or replaced sys.stderr has none), else the process's original."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")


def _describe(exc: BaseException) -> str:
    """The first real error inside anyio's exception groups, as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
