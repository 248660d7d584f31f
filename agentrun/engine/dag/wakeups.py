"""When the unloaded runs of this process load again: a heap of (when, execution id) and one
loop timer, for the earliest only, however many runs wait (100,000 idle executions cost 100,000
heap entries, not 100,000 timers). An entry whose run was loaded meanwhile is stale; the owner
(`LiveRuns`) tells by comparing the wake-up it parked the run with."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

# Unloaded runs are loaded this early before their wake-up (restore arms the exact timer).
WAKE_AHEAD_SECONDS = 0.2


class Wakeups:
    def __init__(self, clock: Callable[[], float], due: Callable[[str, float], None]) -> None:
        self._clock = clock
        # Called for each entry that comes due: (execution id, the wake-up it was added with).
        self._due = due
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, execution_id: str, wake: float) -> None:
        """Calls `due` about `wake` (inf: never; such runs load on a signal only)."""
        if wake == math.inf:
            return
        heapq.heappush(self._heap, (wake, execution_id))
        if wake < self._at:
            self._arm()

    def clear(self) -> None:
        self._heap.clear()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._at = math.inf
        if self._heap:
            self._at = self._heap[0][0]
            delay = max(0.0, self._at - WAKE_AHEAD_SECONDS - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        horizon = self._clock() + WAKE_AHEAD_SECONDS
        while self._heap and self._heap[0][0] <= horizon:
            wake, execution_id = heapq.heappop(self._heap)
            self._due(execution_id, wake)
        self._arm()
