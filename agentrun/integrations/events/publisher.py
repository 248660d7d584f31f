"""Publishes every committed execution event to a bus, without ever holding an execution up.

The engine calls `offer(execution_id, events)` after each commit (`engine.hub.listen`); it
only appends to a bounded in-memory queue. One background task drains the queue into the bus.
The store's event log is the source of truth, so nothing needs to be kept anywhere else:
- per execution the publisher remembers the last sequence the bus took;
- when the bus is down (or the queue is full, or a sequence is skipped) the execution is
  marked behind and its later events are not queued; while the bus is down the task probes it
  every `retry_interval` (backing off to `max_retry_interval`);
- once the bus is back, each execution behind is caught up from the store
  (`list_events(after_sequence=last published)`), in order; for the executions it knows, the
  publisher also asks the bus for the last sequence it holds (JetStream keeps the last message
  per subject) and goes back to that if the bus lost acknowledged events.
- an execution first seen after a restart starts from the bus's last sequence when the bus can
  tell (JetStream), else from its first event: at least once; JetStream drops the repeats by
  event id within its duplicate window, and consumers of other buses dedup by the `id`.
State machine instances take the same path: their history entries come as events typed
`instance.<kind>` (`history_event`), keyed by the instance id, and are caught up from the
instance's history. The cursors live in memory: events an execution wrote while the bus was down, and that this
process did not catch up before it stopped, are published again when the execution next
writes an event (a resumed one does at once); a finished execution's are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from agentrun.integrations.events.base import BusEvent, BusUnavailable, EventBus
from agentrun.storage.machines import history_event
from agentrun.storage.records import EventRecord

log = logging.getLogger("agentrun.integrations.events")

PAGE = 500


class BusPublisher:
    def __init__(
        self,
        store: Any,
        bus: EventBus,
        *,
        queue_size: int = 10_000,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        max_cursors: int = 100_000,
        instrumentation: Any = None,
    ) -> None:
        self.store = store
        self.bus = bus
        # Told of each delivered batch (the bus-lag metric); None: nobody listens.
        self.instrumentation = instrumentation
        self.queue_size = queue_size
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self.max_cursors = max_cursors
        self._queue: deque[tuple[str, list[EventRecord]]] = deque()
        self._queued = 0
        self._last: OrderedDict[str, int] = OrderedDict()
        self._meta: dict[str, tuple[str, str]] = {}
        # Keys that are state machine instances (their events read from their history).
        self._instances: set[str] = set()
        # Executions to catch up from the store, in order; True: news arrived during a catch-up.
        self._behind: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = True
        self._stopping = False
        self._delivering = False
        self.published = 0
        self.dropped = 0

    # ------------------------------------------------------------ the engine's side
    def attach(self, hub: Any) -> BusPublisher:
        hub.listen(self.offer)
        return self

    def offer(self, execution_id: str, events: Sequence[EventRecord]) -> None:
        """Called after every commit; never blocks, never raises."""
        if not events:
            return
        if events[0].type.startswith("instance."):
            self._instances.add(execution_id)
        if execution_id in self._behind:
            self._behind[execution_id] = True
            self._wake.set()
            return
        if self._queued + len(events) > self.queue_size:
            self.dropped += len(events)
            self._behind[execution_id] = True
        else:
            self._queue.append((execution_id, list(events)))
            self._queued += len(events)
        self._wake.set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="agentrun-bus-publisher"
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Publishes what it can within `timeout`, then stops and closes the bus."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.bus.close()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing behind."""
        return not self._queue and not self._behind and not self._delivering

    async def drained(self, timeout: float = 10.0) -> None:
        """Waits until everything offered so far is on the bus (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.idle:
            if loop.time() > deadline:
                raise TimeoutError(f"bus publisher still behind on {len(self._behind)} executions")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------ the task
    async def _run(self) -> None:
        delay = self.retry_interval
        first = True
        while True:
            if self._down:
                if not first:
                    # Wait before probing again, longer each time the bus is still down.
                    if self._stopping:
                        return
                    self._park_queue()
                    await self._sleep(delay)
                    delay = min(delay * 2, self.max_retry_interval)
                first = False
                if not await self._reconnect():
                    continue
            published = self.published
            while self._queue and not self._down:
                execution_id, events = self._queue.popleft()
                self._queued -= len(events)
                self._delivering = True
                try:
                    await self._deliver(execution_id, events)
                finally:
                    self._delivering = False
            for execution_id in list(self._behind):
                if self._down:
                    break
                await self._catch_up(execution_id)
            if self.published > published:
                delay = self.retry_interval
            if self._down:
                continue
            if self._stopping and self.idle:
                return
            if not self._queue and not self._behind:
                self._wake.clear()
                await self._wake.wait()

    async def _sleep(self, delay: float) -> None:
        # Only stop() cuts the wait short: new events while the bus is down wait their turn.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), delay)

    async def _reconnect(self) -> bool:
        try:
            await self.bus.connect()
            # Executions seen before the outage: trust the bus's own last sequence where it is
            # lower than ours (it lost acknowledged events), and catch up from there.
            for execution_id in list(self._last):
                meta = await self._meta_for(execution_id)
                if meta is None:
                    continue
                held = await self.bus.last_sequence(meta[0], meta[1], execution_id)
                if held is not None and held < self._last[execution_id]:
                    self._last[execution_id] = held
                    self._behind[execution_id] = True
        except BusUnavailable as exc:
            log.debug("event bus %s unavailable: %s", self.bus.name, exc)
            return False
        if self._down:
            log.info("event bus %s available", self.bus.name)
        self._down = False
        return True

    def _park_queue(self) -> None:
        """While the bus is down the queue only says which executions have news."""
        while self._queue:
            execution_id, events = self._queue.popleft()
            self._queued -= len(events)
            self._behind[execution_id] = True

    def _went_down(self, execution_id: str, exc: Exception) -> None:
        if not self._down:
            log.warning(
                "event bus %s unavailable, executions continue; catching up later: %s",
                self.bus.name,
                exc,
            )
        self._down = True
        self._behind[execution_id] = True

    async def _meta_for(self, execution_id: str) -> tuple[str, str] | None:
        meta = self._meta.get(execution_id)
        if meta is None:
            if execution_id in self._instances:
                record: Any = await self.store.instances.get_instance(execution_id)
            else:
                record = await self.store.get_execution(execution_id)
            if record is None:
                return None
            meta = self._meta[execution_id] = (record.tenant, record.workflow)
        return meta

    async def _page(self, key: str, after: int) -> list[EventRecord]:
        """The events after `after` as the store holds them: an execution's, or an instance's
        history entries as events."""
        if key in self._instances:
            entries = await self.store.instances.list_history(key, after_sequence=after, limit=PAGE)
            return [history_event(entry) for entry in entries]
        page: list[EventRecord] = await self.store.list_events(
            key, after_sequence=after, limit=PAGE
        )
        return page

    async def _cursor(self, execution_id: str, first_sequence: int) -> int:
        last = self._last.get(execution_id)
        if last is not None:
            return last
        if first_sequence <= 1:
            last = 0
        else:
            meta = await self._meta_for(execution_id)
            held = await self.bus.last_sequence(meta[0], meta[1], execution_id) if meta else None
            last = held if held is not None else 0
        self._remember(execution_id, last)
        return last

    def _remember(self, execution_id: str, sequence: int) -> None:
        self._last[execution_id] = sequence
        self._last.move_to_end(execution_id)
        while len(self._last) > self.max_cursors:
            old, _ = self._last.popitem(last=False)
            self._meta.pop(old, None)
            self._instances.discard(old)

    async def _deliver(self, execution_id: str, events: list[EventRecord]) -> None:
        if execution_id in self._behind:
            return
        try:
            meta = await self._meta_for(execution_id)
            if meta is None:
                return
            last = await self._cursor(execution_id, events[0].sequence)
            for event in events:
                if event.sequence <= last:
                    continue
                if event.sequence != last + 1:
                    self._behind[execution_id] = True  # a gap: the store has the rest
                    return
                await self.bus.publish(
                    BusEvent.from_record(event, tenant=meta[0], workflow=meta[1])
                )
                last = event.sequence
                self._remember(execution_id, last)
                self.published += 1
            if self.instrumentation is not None:
                self.instrumentation.events_published(execution_id, events)
        except BusUnavailable as exc:
            self._went_down(execution_id, exc)
        except Exception:  # the store failed: try again from the store later
            log.exception("publishing events of %s failed", execution_id)
            self._behind[execution_id] = True

    async def _catch_up(self, execution_id: str) -> None:
        try:
            meta = await self._meta_for(execution_id)
            if meta is None:
                self._behind.pop(execution_id, None)
                return
            if execution_id not in self._last:
                held = await self.bus.last_sequence(meta[0], meta[1], execution_id)
                self._remember(execution_id, held or 0)
            while True:
                self._behind[execution_id] = False
                after = self._last[execution_id]
                page = await self._page(execution_id, after)
                for event in page:
                    await self.bus.publish(
                        BusEvent.from_record(event, tenant=meta[0], workflow=meta[1])
                    )
                    self._remember(execution_id, event.sequence)
                    self.published += 1
                if len(page) < PAGE and not self._behind.get(execution_id):
                    break
            self._behind.pop(execution_id, None)
        except BusUnavailable as exc:
            self._went_down(execution_id, exc)
        except Exception:
            log.exception("catching up events of %s failed", execution_id)
