"""The event loop MCP sessions live on: its own thread, apart from the engine's loop.

Why a thread: the tools of MCP servers must be in the registry when `default_tools()` returns
(workflows are validated against it, synchronously, in the server and in `agentrun run`), and
`default_tools()` may be called inside a running loop. Sessions opened then must stay usable
from whichever loop later runs the engine (a test's loop, the server's), and an MCP session
(anyio task groups) belongs to the loop that opened it. So every session lives here, and calls
cross over with `run_coroutine_threadsafe`; cancelling the awaiting task (an engine timeout)
cancels the call on this loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "agentrun-mcp") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Awaits `coro` on this thread's loop from another loop; cancelling the caller
        cancels `coro`."""
        return await asyncio.wrap_future(self.submit(coro))

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Blocks this (non-MCP) thread until `coro` finishes on the MCP loop."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"timed out after {timeout}s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    @property
    def current(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.current_thread() is self._thread
