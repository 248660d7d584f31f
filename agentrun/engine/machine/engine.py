"""MachineEngine: the façade over state machine instances (create, events, history, watch).

The parts it is made of, each a module of its own:
- instances.py: the instances held in memory and the loop handling each one's events, one
  at a time, committing each event's batch (`InstanceLoop`);
- runtime.py (`Stepper`) and actions.py (`Actions`): how one event changes one instance;
- retries.py: action retries as store rows (a pending event and its retry timer);
- timers.py: timers (`Timers`) and invoked executions (`Invokes`);
- leases.py: the lease on each instance this replica drives, loading, take-over, letting go.

Timers, retries and invokes are rows and ids in the store, so all survive a restart: the
replica that takes an instance (back) re-arms its timers, resumes its pending event and waits
for its invoked execution again.

Wiring: `agentrun serve` builds its Engine with `EngineConfig(state_machines=True)`, which
builds the MachineEngine and starts and stops it after its executions. Built by hand,
`machines = MachineEngine(engine)` after the Engine, `await machines.start()` after
`engine.start()`. Either way it sets `engine.machines`, so that a DAG `workflow` node can run
a state machine instance as its child and the server registers the service from the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Unpack

from agentrun.engine import sizes
from agentrun.engine.errors import (
    AlreadyExists,
    Diagnostic,
    IllegalTransition,
    InvalidInput,
    ShuttingDown,
    Unavailable,
    WorkflowNotFound,
)
from agentrun.engine.machine.errors import EventNotAccepted, InstanceNotFound
from agentrun.engine.machine.instances import (
    Conflict,
    Instance,
    InstanceLoop,
    consume,
    created_entry,
)
from agentrun.engine.machine.leases import LeaseKeeper
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.machine.retries import Retries
from agentrun.engine.machine.runtime import Stepper
from agentrun.engine.machine.timers import Invokes, Timers
from agentrun.engine.machine.work import Event, Suspended, Work
from agentrun.engine.runtime.children import run_instance_child
from agentrun.engine.runtime.common import DEFAULT_TENANT
from agentrun.engine.runtime.notify import Notifier
from agentrun.engine.runtime.reads import LogPage, RunFilter, RunReads, Since
from agentrun.engine.runtime.redaction import redacted_machine_batch
from agentrun.engine.runtime.requests import (
    StartOptions,
    checked_input,
    new_execution_id,
    refuse_changed_repeat,
    request_fingerprint,
    start_options,
)
from agentrun.storage.base import LeaseLost
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    copy_instance,
)
from agentrun.storage.records import WorkflowRecord

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

log = logging.getLogger("agentrun.engine.machine")

_ACTIVE = InstanceState.ACTIVE
_CONFLICT_RETRIES = 8


class InstanceFilter(RunFilter[InstanceState], total=False):
    """What `MachineEngine.list_instances` keeps: RunFilter's, and instances in state `current`."""

    current: str | None


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
        self.secrets = engine.secrets
        # One rng (seeded by EngineConfig.seed) and one hub for both interpreters: an instance's
        # entries reach Watch streams on every replica by the executions' path.
        self.rng = engine.rng
        self.hub = engine.hub
        self.notifier = Notifier(engine.store)
        self.redactor = engine.redactor
        self.instrumentation = engine.instrumentation
        # The synchronous path commits what it computed as is: only without secrets to scrub.
        self.write_at_once = self.store.write_at_once if not self.redactor else None
        self.instances: dict[str, Instance] = {}
        # An instance, its history and watch, read as an execution and its events are.
        self.reads: RunReads[InstanceRecord, HistoryRecord] = RunReads(
            self.hub,
            load=lambda instance_id: self.store.get_instance(instance_id),
            read_log=lambda instance_id, after, limit: self.store.list_history(
                instance_id, after_sequence=after, limit=limit
            ),
            ended=lambda record: record.state is not _ACTIVE,
            is_final=lambda entry: entry.instance_state is not _ACTIVE,
            not_found=lambda instance_id: InstanceNotFound(
                f"instance {instance_id!r} not found", instance=instance_id
            ),
        )
        self.finals: dict[str, list[asyncio.Future[InstanceRecord]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._started = False
        self.stepper = Stepper(self)
        self.loop = InstanceLoop(self)
        self.retries = Retries(self)
        self.timers = Timers(self)
        self.invokes = Invokes(self)
        # How often the store is asked for instances to take over (a lease expired, with a
        # timer, a retry or an invoked execution to drive); None: every lease/3.
        self.leases = LeaseKeeper(self, period=sweep_interval)
        # The DAG runtime reaches state machines through the engine (a `workflow` node).
        engine.machines = self

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
        flushes pending commits and lets this replica's leases go. Once."""
        if self.stopping:
            return
        self.stopping = True
        await self.leases.stop()
        for handles in self.timers.handles.values():
            for handle in handles.values():
                handle.cancel()
        self.timers.handles.clear()
        tasks = [*self.invokes.tasks.values(), *self.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.invokes.tasks.clear()
        await self.leases.release()
        await self.notifier.close()
        await self.store.close()

    async def _plan(
        self, tenant: str, workflow: str, version: int | None
    ) -> tuple[WorkflowRecord, MachinePlan]:
        wf = await self.engine.get_workflow(workflow, tenant=tenant, version=version)
        return wf, await self.plan_of(wf)

    async def plan_of(self, wf: WorkflowRecord) -> MachinePlan:
        """The machine plan of a stored version, compiled once per process for both
        interpreters (Workflows.machine_plan; a DAG is refused)."""
        return await self.engine.workflows.machine_plan(wf)

    async def is_machine(
        self, workflow: str, *, tenant: str = DEFAULT_TENANT, version: int | None = None
    ) -> bool:
        """Whether `workflow` names a state machine (for the DAG `workflow` node)."""
        try:
            wf = await self.engine.get_workflow(workflow, tenant=tenant, version=version)
        except WorkflowNotFound:
            return False
        return (wf.spec or {}).get("mode") in ("MODE_STATE_MACHINE", 2)

    async def create_instance(
        self,
        workflow: str,
        input: Any = None,
        *,
        data: dict[str, Any] | None = None,
        instance_id: str | None = None,
        **options: Unpack[StartOptions],
    ) -> InstanceRecord:
        """Creates an instance in the machine's initial state (its entry actions run, its timers
        are armed, its invoke starts). A repeated `request_id` with the same payload returns
        the first instance; with another payload, AlreadyExists."""
        self._check_open()
        options = start_options(options)
        tenant = options.get("tenant", DEFAULT_TENANT)
        version, request_id = options.get("version"), options.get("request_id")
        labels = options.get("labels")
        wf, plan = await self._plan(tenant, workflow, version)
        input = checked_input(input, plan.input_schema)
        sizes.check_request("data", data, "input_bytes")
        if data is not None and not isinstance(data, dict):
            raise InvalidInput([Diagnostic("data", "must be an object")])
        request_hash = (
            request_fingerprint(workflow=workflow, version=version or 0, input=input, data=data)
            if request_id
            else None
        )
        now = self.clock()
        parent_id, parent_node = options.get("parent") or (None, None)
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
            parent_id=parent_id,
            parent_node=parent_node,
            labels=dict(labels or {}),
            owner=self.replica_id,
            lease_epoch=1,
            lease_expires_at=self.leases.expiry(),
        )
        work = Work(record, now)
        entry = created_entry(work, plan, data)
        try:
            await self.stepper.enter_initial(plan, work, entry)
        except Suspended as wait:
            return await self.retries.create_held(plan, work, data, wait)
        first = work.snapshot()
        stored_batch = MachineBatch(first, work.entries)
        if self.redactor:
            stored_batch = redacted_machine_batch(stored_batch, self.redactor)
        stored, created = await self.store.create_instance(
            stored_batch.instance, stored_batch.history, work.timers or ()
        )
        if not created:
            refuse_changed_repeat(stored.request_hash, request_hash, request_id)
            for child in work.stop_invoke + ([work.start_invoke] if work.start_invoke else []):
                self.invokes.cancel(child, tenant)
            return stored
        inst = Instance(plan, first, {})
        inst.fence = (self.replica_id, 1)
        inst.timer_keys = {t.key for t in work.timers or ()}
        self.loop.keep(inst)
        self.loop.after_commit(inst, work, stored_batch.history)
        return copy_instance(first)

    async def get_instance(
        self, instance_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> InstanceRecord:
        return await self.reads.get(instance_id, tenant)

    async def list_instances(
        self, *, tenant: str = DEFAULT_TENANT, limit: int = 100, **keep: Unpack[InstanceFilter]
    ) -> list[InstanceRecord]:
        """A page of `tenant`'s instances that `keep` keeps (InstanceFilter)."""
        return await self.store.list_instances(tenant, limit=limit, **keep)

    async def list_history(self, instance_id: str, **page: Unpack[LogPage]) -> list[HistoryRecord]:
        """The instance's history after `after_sequence`, at most `limit` (RunReads.log)."""
        return await self.reads.log(instance_id, **page)

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
        plan = await self.plan_of(wf)
        state = plan.states.get(record.current)
        return record, list(state.events) if state is not None else []

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
        if data is not None:  # None is within every limit
            sizes.check_request("data", data, "signal_bytes")
        for attempt in range(_CONFLICT_RETRIES):
            if attempt:
                # Writers that lost a race on both replicas would otherwise all reload and
                # collide again at once: each waits a jittered, growing pause first.
                await asyncio.sleep(self.rng.uniform(0, 0.005 * 2**attempt))
            inst = self.instances.get(instance_id)
            if inst is None or inst.record.tenant != tenant:
                inst = await self.leases.load(instance_id, tenant)
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
            at_once = self.write_at_once
            if at_once is not None and not inst.busy:
                # The memory store always commits synchronously, and SQLite's often can (their
                # `write_at_once`): an event that calls nothing is handled here and now,
                # without a single suspension.
                work = self.stepper.quick(
                    inst.plan, inst.record, event, event_id, data, self.clock()
                )
                if work is not None:
                    snapshot = work.snapshot()
                    # Positional: this is the hottest path (fields: ..., added, base, fence).
                    batch = MachineBatch(
                        snapshot, work.entries, work.timers, work.fired, (), None, inst.fence
                    )
                    try:
                        # False (SQLite: not now, or refused): nothing written, the work
                        # committed the usual way below, which gives a refusal's outcome.
                        written = at_once(batch)
                    except LeaseLost:  # memory's fence refused it: nothing written
                        self.leases.let_go(inst.id, "its lease was taken by another replica")
                        continue
                    if written:
                        inst.record = snapshot
                        entry = work.entries[0]
                        if event_id:
                            inst.event_ids[event_id] = (event, data, (entry, snapshot))
                        self.loop.after_commit(
                            inst, work, work.entries, announced=self.store.announces
                        )
                        return snapshot, entry
                    # Not written at once: the same work the usual way, not computed again.
                    # Often the loop's turn first (NOW_STREAK_SECONDS spent, soon after a slow
                    # commit): 376-800 of 3,000 back-to-back events of step_floor's cycle on
                    # this VM's loaded disk (counted at `SqliteWrites.write_now`, 7 Dec 2026).
                    ev = self._handled(inst, event, event_id, data)
                    try:
                        result = await self.loop.dispatch_computed(inst, ev, work)
                    except Conflict:
                        continue
                    return self._answer(inst, ev, result)
            ev = self._handled(inst, event, event_id, data)
            try:
                result = await self.loop.dispatch(inst, ev)
            except Conflict:
                continue
            return self._answer(inst, ev, result)
        raise Unavailable(
            f"instance {instance_id}: too many concurrent writers; retry", instance=instance_id
        )

    def _handled(self, inst: Instance, event: str, event_id: str | None, data: Any) -> Event:
        """The event about to be handled; its id, if any, known from now on (a repeat sent
        meanwhile waits for this one's outcome, `_repeat`)."""
        ev = Event(event, event_id, data)
        if event_id:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.add_done_callback(consume)
            inst.event_ids[event_id] = (event, data, future)
        return ev

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
        inst = self.instances.get(instance_id)
        if inst is None or inst.record.tenant != tenant:
            inst = await self.leases.load(instance_id, tenant)
        if inst.record.state is not _ACTIVE:
            raise IllegalTransition(
                f"instance {instance_id} is {inst.record.state.value}",
                current_state=inst.record.state.value,
                name=f"instances/{instance_id}",
            )
        result = await self.loop.dispatch(inst, Event("cancel", None, reason, source="cancel"))
        return result[1] if result is not None else inst.record

    async def run_child(self, **call: Any) -> Any:
        """A DAG `workflow` node naming a state machine: the instance as the node's child
        (`run_instance_child` in runtime/children.py, which takes these keyword arguments)."""
        return await run_instance_child(self, **call)

    async def wait_final(self, instance_id: str, timeout: float | None = None) -> InstanceRecord:
        """Returns the instance once it is COMPLETED, FAILED or CANCELLED."""
        inst = self.instances.get(instance_id)
        record = inst.record if inst is not None else await self.store.get_instance(instance_id)
        if record is None:
            raise InstanceNotFound(f"instance {instance_id!r} not found", instance=instance_id)
        if record.state is not _ACTIVE:
            return copy_instance(record)
        future: asyncio.Future[InstanceRecord] = asyncio.get_running_loop().create_future()
        self.finals.setdefault(instance_id, []).append(future)
        return copy_instance(await asyncio.wait_for(future, timeout))

    def watch(self, instance_id: str, **since: Unpack[Since]) -> AsyncIterator[HistoryRecord]:
        """The stored history after `after_sequence`, then live entries; each once, in order;
        ends after the entry that ends the instance (RunReads.watch)."""
        return self.reads.watch(instance_id, **since)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _check_open(self) -> None:
        if self.stopping or self.engine.draining:
            raise ShuttingDown("the server is shutting down and takes no new work")
