"""The instances this process holds in memory, and the loop that handles each one's events.

One event at a time per instance, in arrival order: the first sender of an idle instance
handles its event in its own coroutine (no task, no hand-off: the in-memory path costs a few
microseconds); senders that find the instance busy queue behind it, and a drain task handles
the queue in order. A commit is awaited before the next event of the same instance starts, so
the store never holds an event whose predecessor is missing; commits of different instances
are grouped by the store. An event stored as its instance's pending one (an action waiting
for its next attempt, retries.py) hands the instance to the task that finishes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from agentrun.engine.errors import IllegalTransition, ShuttingDown
from agentrun.engine.machine.plan import INVOKE_ERROR, MachinePlan
from agentrun.engine.machine.work import Event, Suspended, Work
from agentrun.engine.runtime.redaction import redacted_machine_batch
from agentrun.storage.base import LeaseLost
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    history_event,
)

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")

_ACTIVE = InstanceState.ACTIVE
# Events a client sent: their instance is loaded taking its lease from another replica.
SENT = ("external", "cancel")


class Conflict(ValueError):
    """The store refused an event's commit: another writer changed the instance first."""


class Held:
    """What handling an event returns when the event was stored as its instance's pending
    one: the outcome comes later, from the task that owns the instance now (`_resume`)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


class Instance:
    """The live state of one instance in this process."""

    __slots__ = (
        "busy",
        "due",
        "event_ids",
        "fence",
        "held",
        "id",
        "plan",
        "queue",
        "record",
        "resumer",
        "timer_keys",
        "wake",
    )

    def __init__(
        self, plan: MachinePlan, record: InstanceRecord, event_ids: dict[str, Any]
    ) -> None:
        self.id = record.id
        self.plan = plan
        # Never mutated: each event replaces it (the store and callers may hold the old one).
        self.record = record
        self.busy = False
        self.queue: deque[tuple[Event, asyncio.Future[Any]]] = deque()
        # event id -> (entry, instance after it), or a future while the event is queued/handled.
        self.event_ids = event_ids
        # Keys of the timers the store holds for the instance: a timer event whose key is not
        # here was consumed (or its state left) already, and is ignored.
        self.timer_keys: set[str] = set()
        # A pending event's task owns the instance (`busy` stays set after its handler returns).
        self.held = False
        # Retry timers that fired, and the future the pending event's task waits on for one.
        self.due: set[str] = set()
        self.wake: asyncio.Future[None] | None = None
        self.resumer: asyncio.Task[None] | None = None
        # (owner, lease_epoch) of this replica's lease: every commit carries it.
        self.fence: tuple[str, int] | None = None


class InstanceLoop:
    """Handles each instance's events one at a time (`dispatch`), commits what an event did
    (`commit_work`, `commit`) and does what follows a commit (`after_commit`)."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self._submit = machines.store.submit
        self._yield_first = machines.store.yield_first
        # What every commit touches, at hand.
        self._hub = machines.hub
        self._notifier = machines.notifier
        # Commits the store announces itself need no announcement after them.
        self._commits_announced = machines.store.announces
        self._instrumentation = machines.instrumentation

    async def dispatch(self, inst: Instance, ev: Event) -> Any:
        if inst.busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            inst.queue.append((ev, future))
            return await future
        inst.busy = True
        try:
            result = await self._handle(inst, ev)
        finally:
            self._release(inst)
        if isinstance(result, Held):
            return await asyncio.shield(result.future)
        return result

    async def dispatch_computed(
        self, inst: Instance, ev: Event, work: Work
    ) -> tuple[HistoryRecord, InstanceRecord]:
        """`dispatch` for an external event whose `work` the caller computed (the engine's
        quick step) on the instance as it is: idle, loaded, ACTIVE, and nothing ran since
        (no suspension). What `dispatch` would do, without computing the event again: the
        instance held, the work committed (`commit_work`), the instance released. The event
        the store did not write at once takes this way (SQLite's `write_at_once` declined it:
        the loop must go round first, or its writer is busy; memory's writes every one)."""
        inst.busy = True
        try:
            return await self.commit_work(inst, work, ev, work.entries[0])
        finally:
            self._release(inst)

    def _release(self, inst: Instance) -> None:
        """After an event: the next queued one is drained by a task, or the instance is idle."""
        if inst.held:
            pass  # a pending event's task owns the instance now
        elif inst.queue:
            self.m.spawn(self._drain(inst))
        else:
            inst.busy = False

    async def _drain(self, inst: Instance) -> None:
        try:
            while inst.queue:
                ev, future = inst.queue.popleft()
                try:
                    result = await self._handle(inst, ev)
                except asyncio.CancelledError:
                    if not future.done():
                        future.cancel()
                    raise
                except BaseException as exc:
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if isinstance(result, Held):
                        chain(result.future, future)
                        return  # the pending event's task drains the rest once it is done
                    if not future.done():
                        future.set_result(result)
        finally:
            if not inst.held:
                for ev, future in inst.queue:
                    if not future.done():
                        future.set_exception(ShuttingDown("the instance stopped taking events"))
                inst.queue.clear()
                inst.busy = False

    async def _handle(self, inst: Instance, ev: Event) -> Any:
        """Handles one event to the end: process, apply, commit, then what follows a commit."""
        record = inst.record
        if self.m.instances.get(inst.id) is not inst:
            # Evicted (a failed commit, or the instance ended): the store holds the truth;
            # reload it and queue behind whatever the fresh copy is handling.
            fresh = await self.m.leases.load(inst.id, record.tenant, take=ev.source in SENT)
            return await self.dispatch(fresh, ev)
        return await self._handle_on(inst, ev)

    async def _handle_on(self, inst: Instance, ev: Event) -> Any:
        record = inst.record
        if record.state is not _ACTIVE:
            if ev.source == "external" or ev.source == "cancel":
                self.forget_id(inst, ev)
                raise IllegalTransition(
                    f"instance {inst.id} is {record.state.value}; it takes no events",
                    current_state=record.state.value,
                    name=f"instances/{inst.id}",
                )
            return None
        if ev.source == "timer" and ev.ref not in inst.timer_keys:
            return None  # consumed already (fired, or its state was left)
        now = self.m.clock()
        work = (
            self.m.stepper.quick(inst.plan, record, ev.name, ev.id, ev.data, now)
            if ev.source == "external"
            else None
        )
        entry: HistoryRecord | None
        if work is not None:
            entry = work.entries[0]
        else:
            work = Work(record, now)
            try:
                entry = await self.m.stepper.process(inst.plan, work, ev)
            except Suspended as wait:
                return await self.m.retries.hold(inst, work, ev, wait)
            except BaseException:
                self.forget_id(inst, ev)
                raise
            if entry is None:
                return None
        return await self.commit_work(inst, work, ev, entry)

    async def commit_work(
        self, inst: Instance, work: Work, ev: Event, entry: HistoryRecord
    ) -> tuple[HistoryRecord, InstanceRecord]:
        """Commits what handling `ev` did, then does what follows a commit."""
        snapshot = work.snapshot()
        inst.record = snapshot
        batch = MachineBatch(snapshot, work.entries, work.timers, work.fired, fence=inst.fence)
        outcome = (entry, snapshot)
        cancelled, entries = await self.commit(inst, ev, batch)
        self._settle(inst, work, ev, outcome, entries)
        if cancelled:
            raise asyncio.CancelledError
        return outcome

    async def commit(
        self, inst: Instance, ev: Event, batch: MachineBatch
    ) -> tuple[bool, list[HistoryRecord]]:
        """Commits `batch` (redacted); returns whether the caller was cancelled meanwhile (the
        batch is written all the same) and the history entries as stored. A failure evicts
        the instance (the store holds the truth); a refused batch raises Conflict."""
        if self.m.redactor:
            batch = redacted_machine_batch(batch, self.m.redactor)
        submit = self._submit
        cancelled = False
        try:
            if submit is None:
                await self.m.store.commit(batch)
            else:
                yield_first = self._yield_first
                if yield_first is not None and yield_first():
                    # The store's writes at once kept the loop from going round too long
                    # (a sender that never waits): one turn, and this batch is written at
                    # once, not by the group commit's writer task (its turns and wake-ups).
                    # The instance is busy meanwhile: later senders queue behind this event.
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError:
                        cancelled = True  # written all the same, as below
                future = submit(batch)
                # The batch is queued and will be written (or fail) whatever happens to this
                # caller: the instance takes no other event until it is settled.
                while True:
                    try:
                        await asyncio.shield(future)
                        break
                    except asyncio.CancelledError:
                        # Noted even when the batch is done by now: a cancellation that came
                        # with the commit's end must not be lost (the engine's stop waits for
                        # this task, which would otherwise go on to wait for a retry timer).
                        cancelled = True
                        if future.done():
                            if future.cancelled():
                                raise
                            future.result()
                            break
        except asyncio.CancelledError:
            self.evict(inst, None)
            self.forget_id(inst, ev)
            raise
        except BaseException as exc:
            self.evict(inst, exc)
            self.forget_id(inst, ev)
            if isinstance(exc, (ValueError, LeaseLost)):  # refused: a stale write (see send_event)
                raise Conflict(str(exc)) from exc
            raise
        return cancelled, batch.history

    def _settle(
        self, inst: Instance, work: Work, ev: Event, outcome: Any, entries: list[HistoryRecord]
    ) -> None:
        if ev.id and ev.source == "external":
            known = inst.event_ids.get(ev.id)
            if known is not None and isinstance(known[2], asyncio.Future):
                if not known[2].done():
                    known[2].set_result(outcome)
                inst.event_ids[ev.id] = (known[0], known[1], outcome)
        self.after_commit(inst, work, entries, announced=self._commits_announced)

    def forget_id(self, inst: Instance, ev: Event) -> None:
        if ev.id and ev.source == "external":
            known = inst.event_ids.get(ev.id)
            if known is not None and isinstance(known[2], asyncio.Future):
                del inst.event_ids[ev.id]
                if not known[2].done():
                    known[2].cancel()

    def _shrink(self) -> None:
        """Drops the oldest idle tenth of the cached instances (insertion order)."""
        excess = len(self.m.instances) - self.m.max_instances + max(1, self.m.max_instances // 10)
        for instance_id in list(self.m.instances):
            if excess <= 0:
                return
            inst = self.m.instances[instance_id]
            if inst.busy or inst.queue or pending_futures(inst):
                continue
            del self.m.instances[instance_id]
            excess -= 1

    def evict(self, inst: Instance, exc: BaseException | None) -> None:
        if isinstance(exc, LeaseLost):
            self.m.leases.let_go(inst.id, "its lease was taken by another replica")
            return
        log.warning("instance %s: commit failed (%r); reloading it from the store", inst.id, exc)
        if self.m.instances.get(inst.id) is inst:
            del self.m.instances[inst.id]
        self.m.timers.drop(inst.id)

    def keep(self, inst: Instance) -> None:
        self.m.instances[inst.id] = inst
        if len(self.m.instances) > self.m.max_instances:
            self._shrink()

    def after_commit(
        self, inst: Instance, work: Work, entries: list[HistoryRecord], *, announced: bool = False
    ) -> None:
        """Durable now: publish the entries as stored (to Watch streams here and on other
        replicas, unless the commit `announced` them already; to the event bus, to metrics),
        move timers, start or stop children, wake waiters."""
        hub = self._hub
        hub.deliver(inst.id, entries)
        if hub.listening:
            hub.tell(inst.id, [history_event(e) for e in entries])
        if self._instrumentation is not None:
            self._instrumentation.instance_committed(inst.record, entries)
        if not announced:
            self._notifier.announce(inst.id)
        if work.timers is not None:
            if inst.id in self.m.timers.handles:
                self.m.timers.drop(inst.id)
            inst.timer_keys = {t.key for t in work.timers}
            for timer in work.timers:
                self.m.timers.arm(timer)
        elif work.fired is not None:
            inst.timer_keys.discard(work.fired)
            handles = self.m.timers.handles.get(inst.id)
            if handles is not None:
                handles.pop(work.fired, None)
        record = inst.record
        if work.stop_invoke:
            for child in work.stop_invoke:
                self.m.invokes.cancel(child, record.tenant)
        if work.start_invoke is not None:
            self.m.invokes.watch(inst.id, work.start_invoke, record.tenant)
        if work.invoke_failed is not None and record.invoke_execution:
            ev = Event(
                INVOKE_ERROR,
                None,
                work.invoke_failed,
                source="invoke",
                ref=record.invoke_execution,
                failed=True,
            )
            self.m.spawn(self.m.timers.internal(inst.id, record.tenant, ev))
        if record.state is not _ACTIVE:
            for future in self.m.finals.pop(inst.id, []):
                if not future.done():
                    future.set_result(record)
            # An ended instance takes no more events: free its memory; a late duplicate or
            # a read loads it again from the store.
            if not inst.queue and self.m.instances.get(inst.id) is inst:
                del self.m.instances[inst.id]


def pending_futures(inst: Instance) -> list[Any]:
    """Event ids of the instance still being handled (their futures must stay reachable)."""
    return [
        v
        for v in inst.event_ids.values()
        if isinstance(v, tuple) and isinstance(v[2], asyncio.Future)
    ]


def consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """`target` gets `source`'s outcome once it has one."""

    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


def created_entry(work: Work, plan: MachinePlan, data: Any) -> HistoryRecord:
    """The entry that creates the instance of `work` in the machine's initial state."""
    work.seq = 1
    return work.add(
        HistoryRecord(
            work.record.id,
            1,
            EntryKind.CREATED,
            work.now,
            "create",
            None,
            data,
            "",
            plan.initial,
            None,
            None,
            None,
            _ACTIVE,
        )
    )
