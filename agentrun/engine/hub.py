"""Live delivery of committed events to watchers in this process.

A watcher's buffer is bounded: a reader that falls behind is marked as overflowed and
its buffer dropped; it then reads the missed events from the store, which holds them
all. So a slow reader costs the server a fixed amount of memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any

from agentrun.storage.records import EventRecord

BUFFER = 1024
log = logging.getLogger("agentrun.engine")


class Subscription:
    __slots__ = ("_event", "_hub", "_key", "buffer", "overflowed")

    def __init__(self, hub: Hub, key: str) -> None:
        self.buffer: deque[EventRecord] = deque()
        self.overflowed = False
        self._event = asyncio.Event()
        self._hub = hub
        self._key = key

    def push(self, events: Iterable[EventRecord]) -> None:
        if self.overflowed:
            return
        self.buffer.extend(events)
        if len(self.buffer) > BUFFER:
            self.buffer.clear()
            self.overflowed = True
        self._event.set()

    async def wait(self) -> None:
        if not self.buffer and not self.overflowed:
            self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        self._hub._remove(self._key, self)


class Hub:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self._listeners: list[Callable[[str, list[EventRecord]], None]] = []
        # Whether anyone listens (a caller may then skip building what it would `tell`).
        self.listening = False

    def listen(self, listener: Callable[[str, list[EventRecord]], None]) -> None:
        """Calls `listener(execution_id, events)` after every commit, for every execution
        (event buses, metrics). It runs on the engine's loop and must not block."""
        self._listeners.append(listener)
        self.listening = True

    def watched(self) -> Collection[str]:
        """The keys someone here follows (the store's notification channel asks, where it
        cannot hear every key: SQLite's instance history, `Store.watch`)."""
        return self._subs.keys()

    def subscribe(self, execution_id: str) -> Subscription:
        sub = Subscription(self, execution_id)
        self._subs.setdefault(execution_id, []).append(sub)
        return sub

    def publish(self, execution_id: str, events: list[EventRecord]) -> None:
        for listener in self._listeners:
            try:
                listener(execution_id, events)
            except Exception:  # a broken listener must not stop executions
                log.exception("event listener failed")
        self.deliver(execution_id, events)

    def tell(self, key: str, events: list[EventRecord]) -> None:
        """Tells the listeners only: a state machine instance's history entries as events
        (`history_event`), whose subscriptions take the entries themselves (`deliver`)."""
        for listener in self._listeners:
            try:
                listener(key, events)
            except Exception:  # a broken listener must not stop instances
                log.exception("event listener failed")

    def deliver(self, key: str, entries: list[Any]) -> None:
        """Feeds `key`'s subscriptions only: a state machine instance's history entries
        (its listeners hear of them through `tell`)."""
        subs = self._subs.get(key)
        if subs and entries:
            for sub in subs:
                sub.push(entries)

    def poke(self, execution_id: str) -> None:
        """Events were committed elsewhere (another replica): watchers re-read the store."""
        for sub in self._subs.get(execution_id, ()):
            sub.overflowed = True
            sub._event.set()

    def _remove(self, key: str, sub: Subscription) -> None:
        subs = self._subs.get(key)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[key]


PAGE = 500


async def follow(
    hub: Hub,
    key: str,
    *,
    after: int,
    read_page: Callable[[int, int], Awaitable[list[Any]]],
    is_final: Callable[[Any], bool],
    finished: Callable[[int], Awaitable[bool]],
) -> AsyncIterator[Any]:
    """A numbered log, stored backlog first and then live, each entry once and in order,
    ending after the final one. Shared by execution and state machine streams.

    Subscribes to `key` on `hub` before the backlog is read (and unsubscribes when the
    reader stops). `read_page(after, limit)` reads the store; `finished(last)` says whether the log ended
    at `last` (checked between the backlog and live phases). A live buffer that overflowed
    or skipped a number sends the reader back to the store, which has every entry.
    """
    sub = hub.subscribe(key)
    try:
        async for entry in _follow(sub, after, read_page, is_final, finished):
            yield entry
    finally:
        sub.close()


async def _follow(
    sub: Subscription,
    after: int,
    read_page: Callable[[int, int], Awaitable[list[Any]]],
    is_final: Callable[[Any], bool],
    finished: Callable[[int], Awaitable[bool]],
) -> AsyncIterator[Any]:
    last = after
    while True:
        # Cleared first, so entries committed while the backlog is read land in the live
        # buffer (duplicates are dropped by sequence).
        sub.overflowed = False
        sub.buffer.clear()
        while True:
            page = await read_page(last, PAGE)
            for entry in page:
                last = entry.sequence
                yield entry
                if is_final(entry):
                    return
            if len(page) < PAGE:
                break
        if await finished(last):
            return
        while True:
            await sub.wait()
            if sub.overflowed:
                break
            gap = False
            while sub.buffer:
                entry = sub.buffer.popleft()
                if entry.sequence <= last:
                    continue
                if entry.sequence != last + 1:
                    gap = True
                    break
                last = entry.sequence
                yield entry
                if is_final(entry):
                    return
            if gap:
                break
