"""MachineEngine: the façade over state machine instances (create, events, history, watch).

One event at a time per instance, in arrival order: the first sender of an idle instance
handles its event in its own coroutine (no task, no hand-off: the in-memory path costs a few
microseconds); senders that find the instance busy queue behind it, and a drain task handles
the queue in order. A commit is awaited before the next event of the same instance starts, so
the store never holds an event whose predecessor is missing; commits of different instances
are grouped by the store.

Timers and invokes are rows and ids in the store: `start()` re-arms every stored timer (one
overdue fires at once) and waits again for every invoked execution, so both survive a restart.
So do action retries: an event whose action waits for its next attempt is stored as the
instance's pending event with a retry timer (`_hold`), and a task (`_resume`) owns the
instance until the timer fired and the event was handled on; after a restart the instance is
taken up again when it is loaded (`_adopt`), which the retry timer's firing does.

Leases (leases.py): the replica holding an instance's lease drives it (timers, retries, the
invoked execution) and fences its commits with `(owner, lease_epoch)`. Loading an instance for
an event acquires its lease (taking it from another replica if need be); a timer or an invoke
result of an instance this replica no longer holds is dropped (its holder handles it).

Wiring (as `agentrun serve` does): `machines = MachineEngine(engine)` after the Engine is
built, `await machines.start()` after `engine.start()`; it sets `engine.machines` so that a DAG
`workflow` node can run a state machine instance as its child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentrun.engine import sizes
from agentrun.engine.errors import (
    AlreadyExists,
    Diagnostic,
    ExecutionNotFound,
    IllegalTransition,
    InvalidInput,
    ShuttingDown,
    Unavailable,
    WorkflowNotFound,
)
from agentrun.engine.hub import follow
from agentrun.engine.machine.compiler import compile_machine
from agentrun.engine.machine.errors import EventNotAccepted, InstanceNotFound
from agentrun.engine.machine.leases import LeaseKeeper
from agentrun.engine.machine.plan import INVOKE_DONE, INVOKE_ERROR, MachinePlan
from agentrun.engine.machine.runtime import Event, Stepper, Suspended, Work
from agentrun.engine.ports import ToolFailure
from agentrun.engine.runtime.children import child_id_of, child_output, ensure_child, start_failures
from agentrun.engine.runtime.common import DEFAULT_TENANT, error_dict
from agentrun.engine.runtime.notify import Notifier
from agentrun.engine.runtime.redaction import redacted_machine_batch
from agentrun.storage.base import LeaseLost
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
    copy_instance,
    history_event,
)
from agentrun.storage.records import ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

log = logging.getLogger("agentrun.engine.machine")

_ACTIVE = InstanceState.ACTIVE
# Events a client sent: their instance is loaded taking its lease from another replica.
_SENT = ("external", "cancel")
_CONFLICT_RETRIES = 8
# The key of a retry timer starts so: `retry:LAST_SEQUENCE:CALLS:ATTEMPT`.
RETRY = "retry:"


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


class MachineEngine:
    def __init__(
        self,
        engine: Engine,
        store: MachineStore | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sweep_interval: float | None = None,
        max_instances: int = 100_000,
    ) -> None:
        self.engine = engine
        # Instances kept in memory; beyond, the oldest idle ones are dropped (and reloaded
        # from the store when an event, a timer or an invoke result comes for them).
        self.max_instances = max_instances
        self.store = store if store is not None else engine.store.instances
        self.clock = clock or engine.clock
        self.replica_id = engine.replica_id
        # How often the store is asked for instances to take over (a lease expired, with a
        # timer, a retry or an invoked execution to drive); None: every lease/3.
        self.leases = LeaseKeeper(self, period=sweep_interval)
        self.secrets = engine.secrets
        # One rng (seeded by EngineConfig.seed) and one hub for both interpreters: an instance's
        # entries reach Watch streams on every replica by the executions' path.
        self.rng = engine.rng
        self.hub = engine.hub
        self._notifier = Notifier(engine.store)
        self.stepper = Stepper(self)
        self._instances: dict[str, Instance] = {}
        self._loading: dict[str, asyncio.Future[Instance]] = {}
        self._plans: dict[tuple[str, str, int], MachinePlan] = {}
        self._timers: dict[str, dict[str, asyncio.TimerHandle]] = {}
        self._children: dict[str, asyncio.Task[None]] = {}
        self._final: dict[str, list[asyncio.Future[InstanceRecord]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._submit = self.store.submit
        self._redactor = engine.redactor
        self._instrumentation = engine.instrumentation
        # The synchronous path commits what it computed as is: only without secrets to scrub.
        self._commit_now = self.store.commit_now if not self._redactor else None
        self._started = False
        self._stopping = False
        # The DAG runtime reaches state machines through the engine (a `workflow` node).
        engine.machines = self

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Takes back the instances this replica held (their timers re-armed, their pending
        events resumed, their invoked executions waited for), then keeps its leases and
        takes over the instances other replicas left (leases.py)."""
        if self._started:
            return
        self._started = True
        await self.store.open()
        await self.leases.start()

    async def stop(self) -> None:
        """Stops timers and waits on children (their rows stay: the next start re-arms them),
        flushes pending commits and lets this replica's leases go."""
        self._stopping = True
        await self.leases.stop()
        for handles in self._timers.values():
            for handle in handles.values():
                handle.cancel()
        self._timers.clear()
        tasks = [*self._children.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._children.clear()
        await self.leases.release()
        await self._notifier.close()
        await self.store.close()

    # ------------------------------------------------------------------ plans
    async def _plan(
        self, tenant: str, workflow: str, version: int | None
    ) -> tuple[Any, MachinePlan]:
        wf = await self.engine.get_workflow(workflow, tenant=tenant, version=version)
        return wf, self._plan_of(wf)

    def _plan_of(self, wf: Any) -> MachinePlan:
        key = (wf.tenant, wf.name, wf.version)
        plan = self._plans.get(key)
        if plan is None:
            cached = self.engine.cached_plan(*key)
            if isinstance(cached, MachinePlan):
                plan = cached
            else:
                from agentrun.engine.engine import spec_from_stored

                spec = spec_from_stored(wf.spec)
                if spec.mode != spec.MODE_STATE_MACHINE:
                    raise InvalidInput(
                        [
                            Diagnostic(
                                "workflow",
                                f"workflow {wf.name!r} is a DAG; start it with StartExecution",
                            )
                        ]
                    )
                plan = compile_machine(spec, tools=self.engine.tools, agents=self.engine.agents)
            self._plans[key] = plan
        return plan

    async def is_machine(
        self, workflow: str, *, tenant: str = DEFAULT_TENANT, version: int | None = None
    ) -> bool:
        """Whether `workflow` names a state machine (for the DAG `workflow` node)."""
        try:
            wf = await self.engine.get_workflow(workflow, tenant=tenant, version=version)
        except WorkflowNotFound:
            return False
        return (wf.spec or {}).get("mode") in ("MODE_STATE_MACHINE", 2)

    # ------------------------------------------------------------------ instances
    async def create_instance(
        self,
        workflow: str,
        input: Any = None,
        *,
        tenant: str = DEFAULT_TENANT,
        version: int | None = None,
        request_id: str | None = None,
        data: dict[str, Any] | None = None,
        instance_id: str | None = None,
        parent: tuple[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> InstanceRecord:
        """Creates an instance in the machine's initial state (its entry actions run, its timers
        are armed, its invoke starts). A repeated `request_id` with the same payload returns
        the first instance; with another payload, AlreadyExists."""
        from agentrun.engine.engine import _validate_input, new_execution_id, request_fingerprint

        self._check_open()
        wf, plan = await self._plan(tenant, workflow, version)
        input = {} if input is None else input
        sizes.check_request("input", input, "input_bytes")
        sizes.check_request("data", data, "input_bytes")
        if plan.input_schema is not None:
            input = _validate_input(input, plan.input_schema)
        if data is not None and not isinstance(data, dict):
            raise InvalidInput([Diagnostic("data", "must be an object")])
        request_hash = (
            request_fingerprint(workflow=workflow, version=version or 0, input=input, data=data)
            if request_id
            else None
        )
        now = self.clock()
        record = InstanceRecord(
            id=instance_id or new_execution_id(self.clock),
            tenant=tenant,
            workflow=wf.name,
            version=wf.version,
            state=_ACTIVE,
            current=plan.initial,
            data={**plan.data, **(data or {})},
            input=input,
            created_at=now,
            updated_at=now,
            request_id=request_id or None,
            request_hash=request_hash,
            parent_id=parent[0] if parent else None,
            parent_node=parent[1] if parent else None,
            labels=dict(labels or {}),
            owner=self.replica_id,
            lease_epoch=1,
            lease_expires_at=self.leases.expiry(),
        )
        work = Work(record, now)
        entry = _created(work, plan, data)
        try:
            await self.stepper.enter_initial(plan, work, entry)
        except Suspended as wait:
            return await self._create_held(plan, work, data, wait)
        first = work.snapshot()
        stored_batch = MachineBatch(first, work.entries)
        if self._redactor:
            stored_batch = redacted_machine_batch(stored_batch, self._redactor)
        stored, created = await self.store.create_instance(
            stored_batch.instance, stored_batch.history, work.timers or ()
        )
        if not created:
            if stored.request_hash != request_hash:
                raise AlreadyExists(
                    f"request_id {request_id!r} was used for a different request",
                    request_id=request_id,
                )
            for child in work.stop_invoke + ([work.start_invoke] if work.start_invoke else []):
                self._cancel_child(child, tenant)
            return stored
        inst = Instance(plan, first, {})
        inst.fence = (self.replica_id, 1)
        inst.timer_keys = {t.key for t in work.timers or ()}
        self._keep(inst)
        self._after_commit(inst, work, stored_batch.history)
        return copy_instance(first)

    async def _create_held(
        self, plan: MachinePlan, work: Work, data: dict[str, Any] | None, wait: Suspended
    ) -> InstanceRecord:
        """An initial entry action waits for its next attempt: the instance is stored with
        its creation as the pending event (no history yet), and is created once it is done."""
        record = work.record
        ev = Event("create", None, data, source="create")
        held, timer = self._pending(record, work, ev, wait)
        stored_batch = MachineBatch(held, [])
        if self._redactor:
            stored_batch = redacted_machine_batch(stored_batch, self._redactor)
        stored, created = await self.store.create_instance(stored_batch.instance, (), (timer,))
        if not created:
            if stored.request_hash != record.request_hash:
                raise AlreadyExists(
                    f"request_id {record.request_id!r} was used for a different request",
                    request_id=record.request_id,
                )
            return stored
        inst = Instance(plan, held, {})
        inst.fence = (self.replica_id, 1)
        inst.busy = inst.held = True
        self._keep(inst)
        self._arm(timer)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        inst.resumer = self._spawn(self._resume(inst, ev, future))
        _, snapshot = await asyncio.shield(future)
        return copy_instance(snapshot)

    def _keep(self, inst: Instance) -> None:
        self._instances[inst.id] = inst
        if len(self._instances) > self.max_instances:
            self._shrink()

    async def get_instance(
        self, instance_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> InstanceRecord:
        record = await self.store.get_instance(instance_id)
        if record is None or record.tenant != tenant:
            raise InstanceNotFound(f"instance {instance_id!r} not found", instance=instance_id)
        return record

    async def list_instances(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        limit: int = 100,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[InstanceState] = (),
        current: str | None = None,
    ) -> list[InstanceRecord]:
        return await self.store.list_instances(
            tenant,
            limit=limit,
            after_id=after_id,
            workflow=workflow,
            states=states,
            current=current,
        )

    async def list_history(
        self,
        instance_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        after_sequence: int = 0,
        limit: int = 1000,
    ) -> list[HistoryRecord]:
        await self.get_instance(instance_id, tenant=tenant)
        return await self.store.list_history(
            instance_id, after_sequence=after_sequence, limit=limit
        )

    async def available_events(
        self, instance_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> tuple[InstanceRecord, list[str]]:
        """The instance and the events its current state accepts (none once it ended)."""
        record = await self.get_instance(instance_id, tenant=tenant)
        if record.state is not _ACTIVE:
            return record, []
        wf = await self.engine.store.get_workflow(
            record.tenant, record.workflow, record.version, include_deleted=True
        )
        if wf is None:
            return record, []
        plan = self._plan_of(wf)
        state = plan.states.get(record.current)
        return record, list(state.events) if state is not None else []

    # ------------------------------------------------------------------ events
    async def send_event(
        self,
        instance_id: str,
        event: str,
        data: Any = None,
        *,
        tenant: str = DEFAULT_TENANT,
        event_id: str | None = None,
    ) -> tuple[InstanceRecord, HistoryRecord]:
        """Handles one event; returns the instance after it and the history entry recording it.

        EventNotAccepted when the current state does not handle it (recorded all the same);
        IllegalTransition once the instance ended; the same `event_id` is applied once (a
        repeat returns the first result, or AlreadyExists when its name or data differ).

        A commit the store refuses because another writer got there first (another replica
        on the same database: the history's sequence and event-id keys fence stale writers)
        reloads the instance and handles the event again on what is stored."""
        sizes.check_request("data", data, "signal_bytes")
        for attempt in range(_CONFLICT_RETRIES):
            if attempt:
                # Writers that lost a race on both replicas would otherwise all reload and
                # collide again at once: each waits a jittered, growing pause first.
                await asyncio.sleep(self.rng.uniform(0, 0.005 * 2**attempt))
            inst = self._instances.get(instance_id)
            if inst is None or inst.record.tenant != tenant:
                inst = await self._load(instance_id, tenant)
            if event_id:
                known = inst.event_ids.get(event_id)
                if known is not None:
                    return await self._repeat(inst, known, event, data, event_id)
            if inst.record.state is not _ACTIVE:
                raise IllegalTransition(
                    f"instance {instance_id} is {inst.record.state.value}; it takes no events",
                    current_state=inst.record.state.value,
                    name=f"instances/{instance_id}",
                )
            commit_now = self._commit_now
            if commit_now is not None and not inst.busy:
                # The memory store commits synchronously: an event that calls nothing is
                # handled here and now, without a single suspension.
                work = self.stepper.quick(
                    inst.plan, inst.record, event, event_id, data, self.clock()
                )
                if work is not None:
                    snapshot = work.snapshot()
                    batch = MachineBatch(
                        snapshot, work.entries, work.timers, work.fired, fence=inst.fence
                    )
                    try:
                        commit_now(batch)
                    except LeaseLost:
                        self.let_go(inst.id, "its lease was taken by another replica")
                        continue
                    inst.record = snapshot
                    entry = work.entries[0]
                    if event_id:
                        inst.event_ids[event_id] = (event, data, (entry, snapshot))
                    self._after_commit(inst, work, work.entries)
                    return snapshot, entry
            ev = Event(event, event_id, data)
            if event_id:
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                future.add_done_callback(_consume)
                inst.event_ids[event_id] = (event, data, future)
            try:
                result = await self._dispatch(inst, ev)
            except Conflict:
                continue
            return self._answer(inst, ev, result)
        raise Unavailable(
            f"instance {instance_id}: too many concurrent writers; retry", instance=instance_id
        )

    async def _repeat(
        self, inst: Instance, known: Any, event: str, data: Any, event_id: str
    ) -> tuple[InstanceRecord, HistoryRecord]:
        if isinstance(known, int):  # loaded from the store: only the sequence is at hand
            entries = await self.store.list_history(inst.id, after_sequence=known - 1, limit=1)
            entry = entries[0]
            known = (entry.event, entry.event_data, (entry, inst.record))
            inst.event_ids[event_id] = known
        name, first_data, outcome = known
        if name != event or first_data != data:
            raise AlreadyExists(
                f"event id {event_id!r} was used for a different event", event_id=event_id
            )
        if isinstance(outcome, asyncio.Future):
            outcome = await asyncio.shield(outcome)
        entry, record = outcome
        return self._answer(inst, Event(event, event_id, data), (entry, record))

    def _answer(
        self, inst: Instance, ev: Event, result: Any
    ) -> tuple[InstanceRecord, HistoryRecord]:
        entry, record = result
        if entry.kind is EntryKind.REJECTED:
            accepted = inst.plan.states[entry.from_state].events
            raise EventNotAccepted(
                f"state {entry.from_state!r} does not accept event {ev.name!r}; it accepts: "
                + (", ".join(accepted) or "nothing"),
                instance=inst.id,
                event=ev.name,
                current=entry.from_state,
                accepted=accepted,
                sequence=entry.sequence,
            )
        return record, entry

    async def cancel_instance(
        self,
        instance_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        reason: str = "cancelled by request",
    ) -> InstanceRecord:
        inst = self._instances.get(instance_id)
        if inst is None or inst.record.tenant != tenant:
            inst = await self._load(instance_id, tenant)
        if inst.record.state is not _ACTIVE:
            raise IllegalTransition(
                f"instance {instance_id} is {inst.record.state.value}",
                current_state=inst.record.state.value,
                name=f"instances/{instance_id}",
            )
        result = await self._dispatch(inst, Event("cancel", None, reason, source="cancel"))
        return result[1] if result is not None else inst.record

    # ------------------------------------------------------------------ the loop per instance
    async def _dispatch(self, inst: Instance, ev: Event) -> Any:
        if inst.busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            inst.queue.append((ev, future))
            return await future
        inst.busy = True
        try:
            result = await self._handle(inst, ev)
        finally:
            if inst.held:
                pass  # a pending event's task owns the instance now
            elif inst.queue:
                self._spawn(self._drain(inst))
            else:
                inst.busy = False
        if isinstance(result, Held):
            return await asyncio.shield(result.future)
        return result

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
                        _chain(result.future, future)
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
        if self._instances.get(inst.id) is not inst:
            # Evicted (a failed commit, or the instance ended): the store holds the truth;
            # reload it and queue behind whatever the fresh copy is handling.
            fresh = await self._load(inst.id, record.tenant, take=ev.source in _SENT)
            return await self._dispatch(fresh, ev)
        return await self._handle_on(inst, ev)

    async def _handle_on(self, inst: Instance, ev: Event) -> Any:
        record = inst.record
        if record.state is not _ACTIVE:
            if ev.source == "external" or ev.source == "cancel":
                self._forget_id(inst, ev)
                raise IllegalTransition(
                    f"instance {inst.id} is {record.state.value}; it takes no events",
                    current_state=record.state.value,
                    name=f"instances/{inst.id}",
                )
            return None
        if ev.source == "timer" and ev.ref not in inst.timer_keys:
            return None  # consumed already (fired, or its state was left)
        now = self.clock()
        work = (
            self.stepper.quick(inst.plan, record, ev.name, ev.id, ev.data, now)
            if ev.source == "external"
            else None
        )
        if work is not None:
            entry = work.entries[0]
        else:
            work = Work(record, now)
            try:
                entry = await self.stepper.process(inst.plan, work, ev)
            except Suspended as wait:
                return await self._hold(inst, work, ev, wait)
            except BaseException:
                self._forget_id(inst, ev)
                raise
            if entry is None:
                return None
        return await self._commit_work(inst, work, ev, entry)

    async def _commit_work(
        self, inst: Instance, work: Work, ev: Event, entry: HistoryRecord
    ) -> tuple[HistoryRecord, InstanceRecord]:
        """Commits what handling `ev` did, then does what follows a commit."""
        snapshot = work.snapshot()
        inst.record = snapshot
        batch = MachineBatch(snapshot, work.entries, work.timers, work.fired, fence=inst.fence)
        outcome = (entry, snapshot)
        cancelled, entries = await self._commit(inst, ev, batch)
        self._settle(inst, work, ev, outcome, entries)
        if cancelled:
            raise asyncio.CancelledError
        return outcome

    async def _commit(
        self, inst: Instance, ev: Event, batch: MachineBatch
    ) -> tuple[bool, list[HistoryRecord]]:
        """Commits `batch` (redacted); returns whether the caller was cancelled meanwhile (the
        batch is written all the same) and the history entries as stored. A failure evicts
        the instance (the store holds the truth); a refused batch raises Conflict."""
        if self._redactor:
            batch = redacted_machine_batch(batch, self._redactor)
        submit = self._submit
        cancelled = False
        try:
            if submit is None:
                await self.store.commit(batch)
            else:
                future = submit(batch)
                # The batch is queued and will be written (or fail) whatever happens to this
                # caller: the instance takes no other event until it is settled.
                while True:
                    try:
                        await asyncio.shield(future)
                        break
                    except asyncio.CancelledError:
                        if future.done():
                            if future.cancelled():
                                raise
                            future.result()
                            break
                        cancelled = True
        except asyncio.CancelledError:
            self._evict(inst, None)
            self._forget_id(inst, ev)
            raise
        except BaseException as exc:
            self._evict(inst, exc)
            self._forget_id(inst, ev)
            if isinstance(exc, (ValueError, LeaseLost)):  # refused: a stale write (see send_event)
                raise Conflict(str(exc)) from exc
            raise
        return cancelled, batch.history

    # ------------------------------------------------------------------ action retries
    def _pending(
        self, record: InstanceRecord, work: Work, ev: Event, wait: Suspended
    ) -> tuple[InstanceRecord, TimerRecord]:
        """The instance holding `ev` as its pending event, and the timer of its retry."""
        now = self.clock()
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

    async def _store_pending(
        self, inst: Instance, work: Work, ev: Event, wait: Suspended
    ) -> bool:
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
        cancelled, _ = await self._commit(inst, ev, batch)
        inst.record = held
        if spent is not None:
            inst.timer_keys.discard(spent)
            handle = self._timers.get(inst.id, {}).pop(spent, None)
            if handle is not None:
                handle.cancel()
        self._arm(timer)
        return cancelled

    async def _hold(self, inst: Instance, work: Work, ev: Event, wait: Suspended) -> Held:
        """Stores `ev` as the instance's pending event and hands the instance to a task that
        handles the event on when its retry timer fires."""
        cancelled = await self._store_pending(inst, work, ev, wait)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        inst.held = True
        inst.resumer = self._spawn(self._resume(inst, ev, future))
        if cancelled:
            raise asyncio.CancelledError
        return Held(future)

    def _adopt(self, inst: Instance) -> None:
        """An instance loaded with a pending event (after a restart, or from another replica):
        a task owns it at once, so that events queue behind the pending one; its sender, if
        it sends the event again with its id, gets its outcome."""
        assert inst.record.pending is not None
        ev = Event.from_dict(inst.record.pending["event"])
        loop = asyncio.get_running_loop()
        if ev.id and ev.source == "external":
            waiter: asyncio.Future[Any] = loop.create_future()
            waiter.add_done_callback(_consume)
            inst.event_ids[ev.id] = (ev.name, ev.data, waiter)
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_consume)
        inst.busy = inst.held = True
        inst.resumer = self._spawn(self._resume(inst, ev, future))

    async def _resume(self, inst: Instance, ev: Event, future: asyncio.Future[Any]) -> None:
        """Owns `inst` while its pending event waits for its retry timer, handles the event
        on each time it fires (the actions done are replayed, the waiting one is called
        with its next attempt), commits it, then lets the queued events in."""
        try:
            while True:
                pending = inst.record.pending
                assert pending is not None
                await self._retry_due(inst, pending["key"])
                work = Work(inst.record, self.clock())
                try:
                    if ev.source == "create":
                        entry: HistoryRecord | None = _created(work, inst.plan, ev.data)
                        assert entry is not None
                        await self.stepper.enter_initial(inst.plan, work, entry)
                    else:
                        entry = await self.stepper.process(inst.plan, work, ev)
                except Suspended as wait:
                    if await self._store_pending(inst, work, ev, wait):
                        raise asyncio.CancelledError from None
                    continue
                # The same instance and event choose the same way as the first pass did,
                # which reached an action: there is an entry.
                assert entry is not None
                if work.timers is None:
                    work.fired = pending["key"]  # the event's own timer was spent at the hold
                future.set_result(await self._commit_work(inst, work, ev, entry))
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
            if not self._stopping:
                if inst.queue:
                    await self._drain(inst)
                else:
                    inst.busy = False

    async def _retry_due(self, inst: Instance, key: str) -> None:
        """Waits until the retry timer `key` fired (`_fire_timer`)."""
        while key not in inst.due:
            inst.wake = asyncio.get_running_loop().create_future()
            await inst.wake
        inst.due.discard(key)

    def _settle(
        self, inst: Instance, work: Work, ev: Event, outcome: Any, entries: list[HistoryRecord]
    ) -> None:
        if ev.id and ev.source == "external":
            known = inst.event_ids.get(ev.id)
            if known is not None and isinstance(known[2], asyncio.Future):
                if not known[2].done():
                    known[2].set_result(outcome)
                inst.event_ids[ev.id] = (known[0], known[1], outcome)
        self._after_commit(inst, work, entries)

    def _forget_id(self, inst: Instance, ev: Event) -> None:
        if ev.id and ev.source == "external":
            known = inst.event_ids.get(ev.id)
            if known is not None and isinstance(known[2], asyncio.Future):
                del inst.event_ids[ev.id]
                if not known[2].done():
                    known[2].cancel()

    def _shrink(self) -> None:
        """Drops the oldest idle tenth of the cached instances (insertion order)."""
        excess = len(self._instances) - self.max_instances + max(1, self.max_instances // 10)
        for instance_id in list(self._instances):
            if excess <= 0:
                return
            inst = self._instances[instance_id]
            if inst.busy or inst.queue or _pending(inst):
                continue
            del self._instances[instance_id]
            excess -= 1

    def _evict(self, inst: Instance, exc: BaseException | None) -> None:
        if isinstance(exc, LeaseLost):
            self.let_go(inst.id, "its lease was taken by another replica")
            return
        log.warning("instance %s: commit failed (%r); reloading it from the store", inst.id, exc)
        if self._instances.get(inst.id) is inst:
            del self._instances[inst.id]
        self._drop_timers(inst.id)

    # ------------------------------------------------------------------ leases
    def held_ids(self) -> set[str]:
        """The instances this replica drives: loaded and ACTIVE, or with armed timers or an
        invoked execution it waits for."""
        live = {i for i, inst in self._instances.items() if inst.record.state is _ACTIVE}
        return live | set(self._timers) | set(self._children)

    def let_go(self, instance_id: str, why: str) -> None:
        """Stops driving an instance whose lease another replica holds now: forgets it (an
        event sent here loads it again, taking the lease back), disarms its timers, stops
        waiting for its invoked execution and its pending event's retry."""
        log.info("instance %s: let go here, %s", instance_id, why)
        inst = self._instances.pop(instance_id, None)
        self._drop_timers(instance_id)
        child = self._children.pop(instance_id, None)
        if child is not None:
            child.cancel()
        if inst is not None and inst.resumer is not None and inst.resumer is not asyncio.current_task():
            inst.resumer.cancel()

    async def take_over(self, record: InstanceRecord) -> None:
        """An instance the lease keeper claimed (its replica is gone): drive it from here."""
        inst = self._instances.get(record.id)
        if inst is not None:
            inst.fence = (self.replica_id, record.lease_epoch)
            return
        await self._install(record)

    async def _install(self, record: InstanceRecord) -> Instance:
        """The live instance for `record`, whose lease this replica holds: its timers armed,
        its pending event resumed, its invoked execution waited for."""
        instance_id = record.id
        wf = await self.engine.store.get_workflow(
            record.tenant, record.workflow, record.version, include_deleted=True
        )
        if wf is None:
            raise InstanceNotFound(
                f"instance {instance_id!r}: its workflow is gone", instance=instance_id
            )
        plan = self._plan_of(wf)
        ids: dict[str, Any] = dict(await self.store.event_ids(instance_id))
        active = record.state is _ACTIVE
        timers = await self.store.list_timers(instance_id=instance_id) if active else []
        inst = Instance(plan, record, ids)
        inst.fence = (self.replica_id, record.lease_epoch)
        inst.timer_keys = {t.key for t in timers}
        self._keep(inst)
        if active:
            if record.pending is not None:
                self._adopt(inst)
            armed = self._timers.get(instance_id, {})
            for timer in timers:
                if timer.key not in armed:
                    self._arm(timer)
            if record.invoke_execution and instance_id not in self._children:
                self._watch_child(instance_id, record.invoke_execution, record.tenant)
        return inst

    def _after_commit(self, inst: Instance, work: Work, entries: list[HistoryRecord]) -> None:
        """Durable now: publish the entries as stored (to Watch streams here and on other
        replicas, to the event bus, to metrics), move timers, start or stop children, wake
        waiters."""
        hub = self.hub
        hub.deliver(inst.id, entries)
        if hub.listening:
            hub.tell(inst.id, [history_event(e) for e in entries])
        if self._instrumentation is not None:
            self._instrumentation.instance_committed(inst.record, entries)
        self._notifier.announce(inst.id)
        if work.timers is not None:
            if inst.id in self._timers:
                self._drop_timers(inst.id)
            inst.timer_keys = {t.key for t in work.timers}
            for timer in work.timers:
                self._arm(timer)
        elif work.fired is not None:
            inst.timer_keys.discard(work.fired)
            handles = self._timers.get(inst.id)
            if handles is not None:
                handles.pop(work.fired, None)
        record = inst.record
        if work.stop_invoke:
            for child in work.stop_invoke:
                self._cancel_child(child, record.tenant)
        if work.start_invoke is not None:
            self._watch_child(inst.id, work.start_invoke, record.tenant)
        if work.invoke_failed is not None and record.invoke_execution:
            ev = Event(
                INVOKE_ERROR,
                None,
                work.invoke_failed,
                source="invoke",
                ref=record.invoke_execution,
                failed=True,
            )
            self._spawn(self._internal(inst.id, record.tenant, ev))
        if record.state is not _ACTIVE:
            for future in self._final.pop(inst.id, []):
                if not future.done():
                    future.set_result(record)
            # An ended instance takes no more events: free its memory; a late duplicate or
            # a read loads it again from the store.
            if not inst.queue and self._instances.get(inst.id) is inst:
                del self._instances[inst.id]

    # ------------------------------------------------------------------ loading
    async def _load(self, instance_id: str, tenant: str | None, *, take: bool = True) -> Instance:
        """The live instance, loaded from the store if needed (its lease acquired: `take`n
        from another replica, or only if nobody else holds it); `tenant` None: any tenant's.
        LeaseLost when another replica holds it and `take` is False."""
        inst = self._instances.get(instance_id)
        while inst is None:
            pending = self._loading.get(instance_id)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[instance_id] = pending
                try:
                    record = await self.store.acquire(
                        instance_id,
                        self.replica_id,
                        lease_seconds=self.leases.lease_seconds,
                        now=self.clock(),
                        take=take,
                    )
                    if record is None:
                        if not take:
                            raise LeaseLost(f"instance {instance_id} is not held here")
                        raise InstanceNotFound(
                            f"instance {instance_id!r} not found", instance=instance_id
                        )
                    pending.set_result(await self._install(record))
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: nobody else may be waiting
                finally:
                    del self._loading[instance_id]
            try:
                inst = await asyncio.shield(pending)
            except LeaseLost:
                if not take:
                    raise
                # Another caller's load would not take the lease; this one does.
        if tenant is not None and inst.record.tenant != tenant:
            raise InstanceNotFound(f"instance {instance_id!r} not found", instance=instance_id)
        return inst

    # ------------------------------------------------------------------ timers
    def _arm(self, timer: TimerRecord) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, timer.fire_at - self.clock())
        handle = loop.call_later(delay, self._fire, timer)
        self._timers.setdefault(timer.instance_id, {})[timer.key] = handle

    def _drop_timers(self, instance_id: str) -> None:
        for handle in self._timers.pop(instance_id, {}).values():
            handle.cancel()

    def _fire(self, timer: TimerRecord) -> None:
        handles = self._timers.get(timer.instance_id)
        if handles is not None:
            handles.pop(timer.key, None)
        self._spawn(self._fire_timer(timer))

    async def _fire_timer(self, timer: TimerRecord) -> None:
        try:
            inst = await self._load(timer.instance_id, None, take=False)
        except (InstanceNotFound, LeaseLost):
            return  # gone, or another replica drives it now
        if timer.key.startswith(RETRY):  # wakes the pending event's task (`_retry_due`)
            inst.due.add(timer.key)
            if inst.wake is not None and not inst.wake.done():
                inst.wake.set_result(None)
            return
        tenant = inst.record.tenant
        state = inst.plan.states.get(timer.state)
        name = (
            state.after[timer.index].event
            if state is not None and timer.index < len(state.after)
            else "after"
        )
        ev = Event(name, None, None, source="timer", ref=timer.key, index=timer.index)
        await self._internal(timer.instance_id, tenant, ev)

    async def _internal(self, instance_id: str, tenant: str, ev: Event) -> None:
        """An engine event (timer, invoke result): retried while the store is unavailable;
        dropped once another replica holds the instance (its holder handles the event)."""
        delay = 0.2
        while not self._stopping:
            try:
                inst = await self._load(instance_id, tenant, take=False)
                await self._dispatch(inst, ev)
                return
            except (IllegalTransition, InstanceNotFound, LeaseLost):
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("instance %s: %s failed (%r); retrying", instance_id, ev.name, exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    # ------------------------------------------------------------------ invoked workflows
    async def start_child(
        self,
        record: InstanceRecord,
        child_id: str,
        workflow: str,
        version: int,
        child_input: Any,
        node: str,
    ) -> None:
        """Starts a DAG the instance runs: a state's `invoke` (`node` is `invoke:STATE`) or a
        `workflow` action (`action`). Its id is derived from the entry the event makes (and
        the action's attempt), so an event handled again (after a crash) finds the same child."""
        await ensure_child(
            self.engine,
            child_id,
            workflow,
            child_input,
            tenant=record.tenant,
            version=version,
            parent=(record.id, node),
        )

    def _watch_child(self, instance_id: str, child_id: str, tenant: str) -> None:
        if self._stopping:
            return
        old = self._children.pop(instance_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(
            self._await_child(instance_id, child_id, tenant)
        )
        self._children[instance_id] = task
        task.add_done_callback(
            lambda t, i=instance_id: (
                self._children.pop(i, None) if self._children.get(i) is t else None
            )
        )

    async def _await_child(self, instance_id: str, child_id: str, tenant: str) -> None:
        try:
            final = await self.engine.wait(child_id)
        except ExecutionNotFound:
            ev = Event(
                INVOKE_ERROR,
                None,
                error_dict("internal", f"invoked execution {child_id} is gone"),
                source="invoke",
                ref=child_id,
                failed=True,
            )
        else:
            if final.state is ExecutionState.SUCCEEDED:
                ev = Event(INVOKE_DONE, None, final.output, source="invoke", ref=child_id)
            else:
                err = dict(final.error or {})
                err.setdefault("type", "tool_error")
                err.setdefault("message", f"execution {child_id} ended {final.state.value}")
                err.setdefault("details", {})
                err["execution"] = child_id
                err["execution_state"] = final.state.value
                ev = Event(INVOKE_ERROR, None, err, source="invoke", ref=child_id, failed=True)
        # Handled outside this task: leaving the state cancels the task, not the event.
        self._spawn(self._internal(instance_id, tenant, ev))

    def _cancel_child(self, child_id: str, tenant: str) -> None:
        for instance_id, task in list(self._children.items()):
            if child_id.startswith(instance_id + "."):
                task.cancel()

        async def cancel() -> None:
            with contextlib.suppress(IllegalTransition, ExecutionNotFound, ShuttingDown):
                await self.engine.cancel(child_id, tenant=tenant)

        if not self._stopping:
            self._spawn(cancel())

    async def run_action_workflow(
        self, record: InstanceRecord, child_id: str, workflow: str, version: int, child_input: Any
    ) -> Any:
        """An action `{workflow: ...}`: runs a DAG to its end and returns its output."""
        await self.start_child(record, child_id, workflow, version, child_input, "action")
        final = await self.engine.wait(child_id)
        return child_output(final, f"execution {child_id}", {"execution": child_id})

    # ------------------------------------------------------------------ DAG hook
    async def run_child(
        self,
        *,
        parent_id: str,
        key: str,
        attempt: int,
        workflow: str,
        version: int | None,
        input: Any,
        tenant: str,
    ) -> Any:
        """A DAG `workflow` node naming a state machine: creates the instance (its id derived
        from the node's, so a resumed attempt attaches to the same one), waits for a final
        state and returns `{state, data}`; an instance that FAILED or was CANCELLED fails the node."""
        instance_id = child_id_of(parent_id, key, attempt)
        if await self.store.get_instance(instance_id) is None:
            try:
                with start_failures():
                    await self.create_instance(
                        workflow,
                        input,
                        tenant=tenant,
                        version=version or None,
                        instance_id=instance_id,
                        parent=(parent_id, key),
                    )
            except ValueError:
                if await self.store.get_instance(instance_id) is None:
                    raise
        try:
            final = await self.wait_final(instance_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.cancel_instance(
                    instance_id, tenant=tenant, reason="its parent node was cancelled"
                )
            raise
        if final.state is InstanceState.COMPLETED:
            return {"state": final.current, "data": final.data}
        err = final.error or {}
        raise ToolFailure(
            err.get("type") or "tool_error",
            f"state machine instance {instance_id} ended {final.state.value}: {err.get('message', '')}".strip(),
            details={"instance": instance_id, "state": final.current},
        )

    async def wait_final(self, instance_id: str, timeout: float | None = None) -> InstanceRecord:
        """Returns the instance once it is COMPLETED, FAILED or CANCELLED."""
        inst = self._instances.get(instance_id)
        record = inst.record if inst is not None else await self.store.get_instance(instance_id)
        if record is None:
            raise InstanceNotFound(f"instance {instance_id!r} not found", instance=instance_id)
        if record.state is not _ACTIVE:
            return copy_instance(record)
        future: asyncio.Future[InstanceRecord] = asyncio.get_running_loop().create_future()
        self._final.setdefault(instance_id, []).append(future)
        return copy_instance(await asyncio.wait_for(future, timeout))

    # ------------------------------------------------------------------ watching
    async def watch(
        self, instance_id: str, *, tenant: str = DEFAULT_TENANT, after_sequence: int = 0
    ) -> AsyncIterator[HistoryRecord]:
        """The stored history after `after_sequence`, then live entries; each once, in order;
        ends after the entry that ends the instance."""
        await self.get_instance(instance_id, tenant=tenant)

        async def read_page(after: int, limit: int) -> list[HistoryRecord]:
            return await self.store.list_history(instance_id, after_sequence=after, limit=limit)

        async def finished(last: int) -> bool:
            record = await self.store.get_instance(instance_id)
            return record is not None and record.state is not _ACTIVE and record.last_sequence <= last

        async for entry in follow(
            self.hub,
            instance_id,
            after=after_sequence,
            read_page=read_page,
            is_final=lambda e: e.instance_state is not _ACTIVE,
            finished=finished,
        ):
            yield entry

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._stopping or getattr(self.engine, "draining", False):
            raise ShuttingDown("the server is shutting down and takes no new work")


def _pending(inst: Instance) -> list[Any]:
    """Event ids of the instance still being handled (their futures must stay reachable)."""
    return [
        v
        for v in inst.event_ids.values()
        if isinstance(v, tuple) and isinstance(v[2], asyncio.Future)
    ]


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
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


def _created(work: Work, plan: MachinePlan, data: Any) -> HistoryRecord:
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
