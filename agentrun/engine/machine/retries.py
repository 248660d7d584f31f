"""State machine action retries as store rows.

An event whose action waits for its next attempt (`Suspended`) is stored as the instance's
pending event, with the results of the actions it called so far and a retry timer row,
committed with the failed attempt (`hold`). A task (`_resume`) owns the instance from then on:
when the retry timer fires it handles the event again from its start (the finished actions
replayed, the waiting one called with its next attempt number), stores it pending again or
commits it, and lets the events queued meanwhile in. After a restart, or on another replica
that takes the instance over, loading the instance takes the pending event up (`adopt`); the
retry timer's firing does that load.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentrun.engine.errors import AlreadyExists, ShuttingDown
from agentrun.engine.machine.instances import Held, Instance, consume, created_entry
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.machine.work import Event, Suspended, Work
from agentrun.engine.runtime.redaction import redacted_machine_batch
from agentrun.storage.machines import (
    HistoryRecord,
    InstanceRecord,
    MachineBatch,
    TimerRecord,
    copy_instance,
)

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")

# The key of a retry timer starts so: `retry:LAST_SEQUENCE:CALLS:ATTEMPT`.
RETRY = "retry:"


class Retries:
    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines

    def _pending(
        self, record: InstanceRecord, work: Work, ev: Event, wait: Suspended
    ) -> tuple[InstanceRecord, TimerRecord]:
        """The instance holding `ev` as its pending event, and the timer of its retry."""
        now = self.m.clock()
        key = f"{RETRY}{record.last_sequence}:{len(work.calls)}:{wait.attempt}"
        timer = TimerRecord(record.id, key, record.current, -1, now + wait.delay)
        pending = {
            "event": ev.to_dict(),
            "done": work.calls,
            "attempt": wait.attempt,
            "started": wait.started,
            "error": wait.error,
            "key": key,
            "at": timer.fire_at,
        }
        return replace(record, pending=pending, updated_at=now), timer

    async def store_pending(self, inst: Instance, work: Work, ev: Event, wait: Suspended) -> bool:
        """Commits `ev` as the instance's pending event with its retry timer (replacing the
        pending event's previous retry timer, or consuming the timer that fired `ev`) and
        arms the timer. True when the caller was cancelled meanwhile."""
        record = inst.record
        held, timer = self._pending(record, work, ev, wait)
        old = record.pending
        spent = old["key"] if old is not None else (ev.ref if ev.source == "timer" else None)
        batch = MachineBatch(
            held, [], None, spent, (timer,), base=record.last_sequence, fence=inst.fence
        )
        cancelled, _ = await self.m.loop.commit(inst, ev, batch)
        inst.record = held
        if spent is not None:
            inst.timer_keys.discard(spent)
            handle = self.m.timers.handles.get(inst.id, {}).pop(spent, None)
            if handle is not None:
                handle.cancel()
        self.m.timers.arm(timer)
        return cancelled

    async def hold(self, inst: Instance, work: Work, ev: Event, wait: Suspended) -> Held:
        """Stores `ev` as the instance's pending event and hands the instance to a task that
        handles the event on when its retry timer fires."""
        cancelled = await self.store_pending(inst, work, ev, wait)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(consume)
        inst.held = True
        inst.resumer = self.m.spawn(self._resume(inst, ev, future))
        if cancelled:
            raise asyncio.CancelledError
        return Held(future)

    def adopt(self, inst: Instance) -> None:
        """An instance loaded with a pending event (after a restart, or from another replica):
        a task owns it at once, so that events queue behind the pending one; its sender, if
        it sends the event again with its id, gets its outcome."""
        assert inst.record.pending is not None
        ev = Event.from_dict(inst.record.pending["event"])
        loop = asyncio.get_running_loop()
        if ev.id and ev.source == "external":
            waiter: asyncio.Future[Any] = loop.create_future()
            waiter.add_done_callback(consume)
            inst.event_ids[ev.id] = (ev.name, ev.data, waiter)
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(consume)
        inst.busy = inst.held = True
        inst.resumer = self.m.spawn(self._resume(inst, ev, future))

    async def _resume(self, inst: Instance, ev: Event, future: asyncio.Future[Any]) -> None:
        """Owns `inst` while its pending event waits for its retry timer, handles the event
        on each time it fires (the actions done are replayed, the waiting one is called
        with its next attempt), commits it, then lets the queued events in."""
        try:
            while True:
                pending = inst.record.pending
                assert pending is not None
                await self._retry_due(inst, pending["key"])
                work = Work(inst.record, self.m.clock())
                try:
                    if ev.source == "create":
                        entry: HistoryRecord | None = created_entry(work, inst.plan, ev.data)
                        assert entry is not None
                        await self.m.stepper.enter_initial(inst.plan, work, entry)
                    else:
                        entry = await self.m.stepper.process(inst.plan, work, ev)
                except Suspended as wait:
                    if await self.store_pending(inst, work, ev, wait):
                        raise asyncio.CancelledError from None
                    continue
                # The same instance and event choose the same way as the first pass did,
                # which reached an action: there is an entry.
                assert entry is not None
                if work.timers is None:
                    work.fired = pending["key"]  # the event's own timer was spent at the hold
                future.set_result(await self.m.loop.commit_work(inst, work, ev, entry))
                return
        except asyncio.CancelledError:
            if not future.done():
                future.set_exception(ShuttingDown("the instance stopped taking events"))
            raise
        except Exception as exc:
            log.warning("instance %s: its pending event %s failed (%r)", inst.id, ev.name, exc)
            if not future.done():
                future.set_exception(exc)
        finally:
            inst.held = False
            inst.due.clear()
            if not self.m.stopping:
                if inst.queue:
                    await self.m.loop._drain(inst)
                else:
                    inst.busy = False

    async def _retry_due(self, inst: Instance, key: str) -> None:
        """Waits until the retry timer `key` fired (`_fire_timer`)."""
        while key not in inst.due:
            inst.wake = asyncio.get_running_loop().create_future()
            await inst.wake
        inst.due.discard(key)

    async def create_held(
        self, plan: MachinePlan, work: Work, data: dict[str, Any] | None, wait: Suspended
    ) -> InstanceRecord:
        """An initial entry action waits for its next attempt: the instance is stored with
        its creation as the pending event (no history yet), and is created once it is done."""
        record = work.record
        ev = Event("create", None, data, source="create")
        held, timer = self._pending(record, work, ev, wait)
        stored_batch = MachineBatch(held, [])
        if self.m.redactor:
            stored_batch = redacted_machine_batch(stored_batch, self.m.redactor)
        stored, created = await self.m.store.create_instance(stored_batch.instance, (), (timer,))
        if not created:
            if stored.request_hash != record.request_hash:
                raise AlreadyExists(
                    f"request_id {record.request_id!r} was used for a different request",
                    request_id=record.request_id,
                )
            return stored
        inst = Instance(plan, held, {})
        inst.fence = (self.m.replica_id, 1)
        inst.busy = inst.held = True
        self.m.loop.keep(inst)
        self.m.timers.arm(timer)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(consume)
        inst.resumer = self.m.spawn(self._resume(inst, ev, future))
        _, snapshot = await asyncio.shield(future)
        first: InstanceRecord = copy_instance(snapshot)
        return first

    def due(self, inst: Instance, key: str) -> None:
        """The retry timer `key` fired: wakes the pending event's task (`_retry_due`)."""
        inst.due.add(key)
        if inst.wake is not None and not inst.wake.done():
            inst.wake.set_result(None)
