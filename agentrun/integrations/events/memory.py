"""The in-memory bus: for tests and single-process use; keeps every event, one per id."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from agentrun.integrations.events.base import BusEvent, BusUnavailable, EventBus


class MemoryBus(EventBus):
    name = "memory"

    def __init__(self) -> None:
        self.events: list[BusEvent] = []
        self._ids: set[str] = set()
        self._last: dict[str, int] = defaultdict(int)
        self.available = True
        self.changed = asyncio.Event()

    async def connect(self) -> None:
        if not self.available:
            raise BusUnavailable("memory bus marked unavailable")

    async def publish(self, event: BusEvent) -> None:
        if not self.available:
            raise BusUnavailable("memory bus marked unavailable")
        if event.id in self._ids:
            return
        self._ids.add(event.id)
        self.events.append(event)
        self._last[event.execution_id] = max(self._last[event.execution_id], event.sequence)
        self.changed.set()

    async def last_sequence(self, tenant: str, workflow: str, execution_id: str) -> int | None:
        return self._last.get(execution_id, 0)

    def for_execution(self, execution_id: str) -> list[BusEvent]:
        return [e for e in self.events if e.execution_id == execution_id]
