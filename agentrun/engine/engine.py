"""The engine façade: workflows, executions, signals, control and watching.

Plain asyncio; knows nothing of gRPC. The server and the CLI build one Engine over a
Store and call these methods; engine errors carry stable reasons the server maps to
status codes in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from agentrun.engine import approvals, control, sizes
from agentrun.engine.admission import SharedAdmission, make_admission
from agentrun.engine.breakers import Breakers
from agentrun.engine.budgets import BudgetConfig, Budgets, BudgetSpec
from agentrun.engine.config import EngineConfig
from agentrun.engine.dag import DagRun
from agentrun.engine.dag.messages import Cancel, Fail, Pause, Resume
from agentrun.engine.dag.runs import LiveRuns
from agentrun.engine.errors import (
    AlreadyExists,
    Diagnostic,
    ExecutionNotFound,
    InvalidInput,
    ResourceExhausted,
    ShuttingDown,
    WorkflowNotFound,
)
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.fleet import make_scheduler
from agentrun.engine.hub import Hub
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.node_view import every_node, spec_node_ids
from agentrun.engine.plan import DagPlan, StepPlan
from agentrun.engine.ports import AgentProviders, ToolRegistry
from agentrun.engine.redact import Redactor
from agentrun.engine.rerun import rerun
from agentrun.engine.runtime.children import run_child
from agentrun.engine.runtime.common import DEFAULT_TENANT
from agentrun.engine.runtime.reads import RunReads
from agentrun.engine.runtime.requests import (
    new_execution_id,
    request_fingerprint,
)
from agentrun.engine.runtime.requests import validate_input as _validate_input
from agentrun.engine.scheduler import SchedulerConfig
from agentrun.engine.upkeep import Upkeep
from agentrun.engine.workflows import Workflows
from agentrun.storage.base import Store
from agentrun.storage.budgets import ledger_for
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    SignalRecord,
    WorkflowRecord,
)
from agentrun.v1 import workflow_pb2

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine")


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        tools: ToolRegistry,
        agents: AgentProviders,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.tools = tools
        self.agents = agents
        self.config = config or EngineConfig()
        self.clock = clock
        self.rng = random.Random(
            self.config.seed if self.config.seed is not None else os.urandom(16)
        )
        self.secrets: Mapping[str, str] = dict(self.config.secrets or {})
        self.redactor = Redactor(self.secrets.values())
        self.hub = Hub()
        self.breakers = Breakers(self.config.circuit_breakers)
        self.instrumentation = self.config.instrumentation
        self.replica_id = self.config.replica_id
        self.lease_seconds = self.config.lease_seconds
        sched_config = self.config.scheduler or SchedulerConfig()
        self.scheduler = make_scheduler(
            sched_config, store, replica_id=self.replica_id, lease_seconds=self.lease_seconds
        )
        # Back-references are weak: an engine in no reference cycle is freed, with its store's
        # data and its plans, as soon as its last user lets go (not at a full collection).
        me = weakref.proxy(self)
        self.admission = make_admission(
            sched_config, store, notify=lambda execution_id: me._announce("admit", execution_id)
        )
        # The DAG runs live in this process (agentrun/engine/dag/runs.py).
        self.runs = LiveRuns(cast("Engine", me))
        self.runs.unload_idle = self.config.unload_idle
        if isinstance(self.admission, SharedAdmission):  # a local admission admits in place
            self.admission.on_admitted = self.runs.admitted_here
        self.budgets = Budgets(
            self.config.budgets or BudgetConfig(),
            ledger_for(store),
            engine=self,
            owner=self.replica_id,
            lease_seconds=self.lease_seconds,
        )
        self.scheduler.budgets = self.budgets
        self.draining = False
        # The same dict as `runs.live` (tests and benchmarks read it by this name).
        self._runs: dict[str, DagRun] = self.runs.live
        # Workflow versions and their plans, for both interpreters (workflows.py).
        self.workflows = Workflows(store, tools=tools, agents=agents, clock=clock)
        # An execution, its events and watch, read as an instance and its history are.
        self.reads: RunReads[ExecutionRecord, EventRecord] = RunReads(
            self.hub,
            load=lambda execution_id: me.store.get_execution(execution_id),
            read_log=lambda execution_id, after, limit: me.store.list_events(
                execution_id, after_sequence=after, limit=limit
            ),
            ended=lambda record: record.state.terminal,
            is_final=_is_final,
            not_found=lambda execution_id: ExecutionNotFound(
                f"execution {execution_id!r} not found", execution=execution_id
            ),
        )
        # State machine instances on this engine: a DAG `workflow` node runs an instance as
        # its child, and the server registers their service. Built here with
        # `EngineConfig.state_machines` (then started and stopped with the engine), or
        # installed by `MachineEngine(engine)`.
        self.machines: MachineEngine | None = None
        self._own_machines = self.config.state_machines
        if self._own_machines:
            from agentrun.engine.machine.engine import MachineEngine

            MachineEngine(self)
        self._started = False
        # Leases renewed, orphans adopted, the event log maintained (upkeep.py).
        self.upkeep = Upkeep(cast("Engine", me))

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Claims and resumes unfinished executions (this replica's own at once, others'
        once their leases expired), then keeps leases renewed and orphans adopted."""
        if self._started:
            return
        self._started = True
        self.store.listen(self._on_notification)
        await self.scheduler.start()
        if self.config.adopt:
            await self.upkeep.claim_at_start()
        await self.upkeep.upkeep_events()
        self.upkeep.start()
        if self._own_machines and self.machines is not None:
            await self.machines.start()

    def _on_notification(self, kind: str, execution_id: str) -> None:
        if kind == "admit":
            if self.admission.take(execution_id):
                self.runs.admitted_here(execution_id)
        elif kind == "events":
            self.hub.poke(execution_id)
        elif kind == "signal" and execution_id in self.runs:
            asyncio.get_running_loop().create_task(self.runs.deliver_signals(execution_id))

    @property
    def _maintenance(self) -> asyncio.Task[None] | None:
        """The upkeep loops' task (tests cancel it to stop renewing, as a frozen replica)."""
        return self.upkeep.task

    # ------------------------------------------------------------ budgets
    async def workflow_budget(self, tenant: str, name: str, execution_id: str) -> BudgetSpec | None:
        """The `budget:` of the workflow's newest version, so an update raises or lowers it for
        running executions too (the execution's own version's when the workflow is gone)."""
        try:
            plan: DagPlan | None = await self._plan(await self._cached_workflow(name, tenant, None))
        except (WorkflowNotFound, InvalidInput):  # gone, or its newest version a state machine
            run = self.runs.get(execution_id)
            plan = run.plan if run is not None else None
        return plan.budget if plan is not None else None

    def budget_pause(self, execution_id: str, data: dict[str, Any]) -> bool:
        """Pauses a running execution whose next call does not fit a budget; False if it
        is not running here or is paused already."""
        run = self.runs.get(execution_id)
        if run is None or run.paused:
            return False
        return self.runs.post(execution_id, Pause(data=data))

    def budget_resume(self, execution_id: str) -> None:
        run = self.runs.get(execution_id)
        if run is not None and run.paused and not run.paused_on:
            self.runs.post(execution_id, Resume())

    def budget_fail(self, execution_id: str, error: dict[str, Any]) -> None:
        self.runs.post(execution_id, Fail(error))

    async def stop(self, grace: float = 10.0) -> None:
        """Stops starting nodes, lets running ones finish within `grace`, then detaches.

        Detached nodes stay RUNNING in the store; the next start treats their attempt as
        interrupted and retries it by its policy."""
        self.draining = True
        self.upkeep.stop()
        detached = await self.runs.drain(grace)
        if detached:
            # Handed back: another replica may take them over at once.
            with contextlib.suppress(Exception):
                await self.store.release_leases(self.replica_id, detached)
        await self.scheduler.close()
        await self.budgets.close()
        await self.admission.close()
        if self._own_machines and self.machines is not None:
            await self.machines.stop()

    # ------------------------------------------------------------ workflows
    def validate(self, spec: workflow_pb2.WorkflowSpec) -> DagPlan | MachinePlan:
        return self.workflows.validate(spec)

    async def create_workflow(
        self, spec: workflow_pb2.WorkflowSpec, *, tenant: str = DEFAULT_TENANT
    ) -> WorkflowRecord:
        self._check_open()
        return await self.workflows.create(spec, tenant)

    async def get_workflow(
        self, name: str, *, tenant: str = DEFAULT_TENANT, version: int | None = None
    ) -> WorkflowRecord:
        return await self.workflows.get(name, tenant, version)

    async def list_workflows(
        self, *, tenant: str = DEFAULT_TENANT, limit: int = 100, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        return await self.store.list_workflows(tenant, limit=limit, after_name=after_name)

    async def delete_workflow(self, name: str, *, tenant: str = DEFAULT_TENANT) -> None:
        await self.workflows.delete(name, tenant)

    async def _cached_workflow(self, name: str, tenant: str, version: int | None) -> WorkflowRecord:
        return await self.workflows.cached(name, tenant, version)

    def cached_plan(self, tenant: str, name: str, version: int) -> DagPlan | MachinePlan | None:
        """The plan compiled when this version was created or first run here, if any (either
        kind: `create_workflow` compiles state machines too)."""
        return self.workflows.cached_plan(tenant, name, version)

    async def _plan(self, record: WorkflowRecord) -> DagPlan:
        """The DAG plan of a stored version (a state machine is refused: Workflows.dag_plan)."""
        return self.workflows.dag_plan(record)

    # ------------------------------------------------------------ executions
    async def start_execution(
        self,
        workflow: str,
        input: Any = None,
        *,
        tenant: str = DEFAULT_TENANT,
        version: int | None = None,
        request_id: str | None = None,
        priority: int = 0,
        execution_id: str | None = None,
        parent: tuple[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionRecord:
        """Starts an execution; a repeated `request_id` with the same payload returns the first."""
        self._check_open()
        wf = await self._cached_workflow(workflow, tenant, version)
        plan = await self._plan(wf)
        input = {} if input is None else input
        sizes.check_request("input", input, "input_bytes")
        if plan.input_schema is not None:
            input = _validate_input(input, plan.input_schema)
        key = self.concurrency_key(plan, tenant, input)
        max_pending = self.admission.config.max_pending_executions_per_tenant
        pending = await self.admission.pending_count(tenant) if parent is None else 0
        if parent is None and (pending >= max_pending or self.scheduler.would_overflow()):
            raise ResourceExhausted(
                f"tenant {tenant!r} has {pending} executions waiting to start",
                retry_after=1.0,
                subject=f"tenant:{tenant}",
                quota=f"max_pending_executions_per_tenant ({max_pending})",
                tenant=tenant,
            )
        request_hash = (
            request_fingerprint(
                workflow=workflow, version=version or 0, input=input, priority=priority
            )
            if request_id
            else None
        )
        now = self.clock()
        record = ExecutionRecord(
            id=execution_id or new_execution_id(self.clock),
            tenant=tenant,
            workflow=wf.name,
            version=wf.version,
            state=ExecutionState.PENDING,
            input=input,
            created_at=now,
            priority=priority,
            request_id=request_id or None,
            request_hash=request_hash,
            parent_id=parent[0] if parent else None,
            parent_node=parent[1] if parent else None,
            last_sequence=1,
            labels=dict(labels or {}),
            owner=self.replica_id,
            lease_epoch=1,
            lease_expires_at=now + self.lease_seconds,
        )
        event = EventRecord(
            record.id,
            1,
            "execution.pending",
            now,
            None,
            {"workflow": wf.name, "version": wf.version},
        )
        # Children run under their parent's admission. A start that admission lets run
        # without asking is stored with its first turn (RUNNING, roots started, inline nodes
        # computed): one commit, so a crash leaves either nothing or a running execution
        # recovery resumes. Under a quota or a concurrency key it is stored PENDING first.
        begun = (
            self.runs.begin(plan, copy.copy(record))
            if parent or self.admission.unlimited(key)
            else None
        )
        if begun is None:
            stored, created = await self.store.create_execution(record, events=[event])
        else:
            stored, created = await self._store_begun(*begun, event, plan, key, parent is None)
        if not created:
            if stored.request_hash != request_hash:
                raise AlreadyExists(
                    f"request_id {request_id!r} was used for a different request",
                    request_id=request_id,
                )
            await self._adopt_if_idle(stored)
            return stored
        if begun is not None:
            return stored
        admitted = (
            await self.admission.arrive(
                record.id, tenant, key, plan.concurrency_limit, plan.concurrency_on_limit
            )
            if parent is None
            else None
        )
        if admitted is None or admitted.verdict == "run":
            self.runs.start(plan, copy.copy(record))
            return stored
        if admitted.verdict == "cancel_newest" and key is not None:
            return await self.cancel_pending(
                stored, f"concurrency limit {plan.concurrency_limit} reached for key {key[2]!r}"
            )
        for old_id in admitted.cancel:
            if old_id in self.runs:
                self.runs.post(old_id, Cancel())
            else:  # running on another replica
                asyncio.get_running_loop().create_task(self._cancel_elsewhere(old_id, tenant))
        return stored

    async def _store_begun(
        self,
        run: DagRun,
        first: Batch,
        event: EventRecord,
        plan: DagPlan,
        key: tuple[str, str, str] | None,
        admit: bool,
    ) -> tuple[ExecutionRecord, bool]:
        """Creates an execution with its first turn (one commit) and launches its run once
        stored. Launched even when the caller no longer listens: a start cancelled meanwhile
        (the client left) or failed after its commit (the connection dropped) leaves a running
        execution, never a stored one nobody runs. The caller still sees its error; a retry
        with the same request id finds the execution running."""
        assert first.execution is not None
        started = time.perf_counter()
        creating = asyncio.ensure_future(
            self.store.create_execution(
                copy.copy(first.execution), nodes=first.nodes, events=[event, *first.events]
            )
        )

        async def launch() -> None:
            if admit:  # admission lets it run without asking; it keeps its count
                tenant = run.record.tenant
                await self.admission.arrive(
                    run.id, tenant, key, plan.concurrency_limit, plan.concurrency_on_limit
                )
            if run.id not in self.runs:
                self.runs.launch(run, first, time.perf_counter() - started)

        def launch_if_created(done: asyncio.Future[tuple[ExecutionRecord, bool]]) -> None:
            if not done.cancelled() and done.exception() is None and done.result()[1]:
                asyncio.get_running_loop().create_task(launch())

        try:
            stored, created = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(launch_if_created)
            raise
        except Exception:
            if await self._stored_as_begun(run):
                await launch()
            raise
        if created:
            await launch()
        return stored, created

    async def _stored_as_begun(self, run: DagRun) -> bool:
        """After a failed create: whether its commit happened all the same (the row is there,
        still this replica's)."""
        try:
            row = await self.store.get_execution(run.id)
        except Exception:
            return False
        return (
            row is not None
            and row.owner == self.replica_id
            and row.lease_epoch == run.record.lease_epoch
        )

    async def _cancel_elsewhere(self, execution_id: str, tenant: str) -> None:
        with contextlib.suppress(Exception):
            await self.cancel(execution_id, tenant=tenant)

    async def _adopt_if_idle(self, record: ExecutionRecord) -> None:
        """A start repeated after an ambiguous failure (the row was written, the caller saw an
        error) finds an execution nobody runs yet: this replica runs it."""
        if (
            record.state.terminal
            or record.id in self.runs
            or self.admission.waiting(record.id)
            or record.owner != self.replica_id
        ):
            return
        await self.runs.resume(record)

    def concurrency_key(
        self, plan: DagPlan, tenant: str, input: Any
    ) -> tuple[str, str, str] | None:
        """The execution's concurrency key (tenant, workflow, the key's value), if its plan
        has one."""
        if plan.concurrency_key is None:
            return None
        try:
            value = plan.concurrency_key.evaluate({"input": input})
        except ExpressionError as exc:
            raise InvalidInput([Diagnostic("concurrency.key", exc.message)]) from None
        return (
            tenant,
            plan.name,
            value if isinstance(value, str) else json.dumps(value, sort_keys=True),
        )

    async def cancel_pending(self, record: ExecutionRecord, message: str) -> ExecutionRecord:
        """Ends an execution that never started (queued, or refused by `cancel_newest`)."""
        await self.admission.forget(record.id)
        now = self.clock()
        record.state = ExecutionState.CANCELLED
        record.error = {"type": "cancelled", "message": message}
        record.ended_at = now
        record.last_sequence += 1
        event = EventRecord(
            record.id,
            record.last_sequence,
            "execution.cancelled",
            now,
            None,
            {"error": record.error},
        )
        await self.store.commit(
            Batch(
                execution=record,
                events=[event],
                fence=(record.owner, record.lease_epoch) if record.owner else None,
            )
        )
        self.hub.publish(record.id, [event])
        self.runs.answer_waiters(record.id, copy.copy(record))
        return copy.copy(record)

    def _announce(self, kind: str, execution_id: str) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await self.store.notify(kind, execution_id)

        asyncio.get_running_loop().create_task(send())

    async def run_child(
        self, *, parent_id: str, tenant: str, key: str, attempt: int, step: StepPlan, input: Any
    ) -> Any:
        """Runs a `workflow` node's child, an execution or an instance (runtime/children.py)."""
        return await run_child(self, parent_id, tenant, key, attempt, step, input)

    async def rerun(
        self,
        execution_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        from_node: str | None = None,
        input: Any = None,
        version: int | None = None,
        request_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionRecord:
        """Starts a new execution linked to a finished one (label `rerun_of`), from
        `from_node` (default: the node it failed at), reusing what succeeded before (rerun.py)."""
        self._check_open()
        return await rerun(
            self, execution_id, tenant, from_node, input, version, request_id, labels
        )

    async def get_execution(
        self, execution_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> ExecutionRecord:
        return await self.reads.get(execution_id, tenant)

    async def get_nodes(
        self, execution_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> list[NodeRecord]:
        await self.get_execution(execution_id, tenant=tenant)
        return await self.store.get_nodes(execution_id)

    async def list_nodes(
        self, execution_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> list[NodeRecord]:
        """Every node of the execution's workflow in its order, a node never reached as
        PENDING (get_nodes: only the stored ones). See node_view."""
        record = await self.get_execution(execution_id, tenant=tenant)
        stored = await self.store.get_nodes(execution_id)
        workflow = await self.store.get_workflow(
            record.tenant, record.workflow, record.version, include_deleted=True
        )
        ids = spec_node_ids(workflow.spec) if workflow is not None else []
        return every_node(execution_id, ids, stored)

    async def list_executions(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        limit: int = 100,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        newest_first: bool = False,
    ) -> list[ExecutionRecord]:
        return await self.store.list_executions(
            tenant,
            limit=limit,
            after_id=after_id,
            workflow=workflow,
            states=states,
            created_after=created_after,
            created_before=created_before,
            newest_first=newest_first,
        )

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord:
        """Returns the execution once it is in a final state."""
        final = await self.runs.wait(execution_id, timeout)
        if final is not None:
            return final
        record = await self.store.get_execution(execution_id)
        if record is None:
            raise ExecutionNotFound(f"execution {execution_id!r} not found", execution=execution_id)
        if record.state.terminal:
            return record
        # Queued, starting, or owned by another replica: poll (hands over to a local run).
        return await self.runs.poll_terminal(execution_id, timeout)

    # -------------------------------------------------------------- control
    async def signal(
        self,
        execution_id: str,
        name: str,
        data: Any = None,
        *,
        tenant: str = DEFAULT_TENANT,
        signal_id: str | None = None,
    ) -> ExecutionRecord:
        """Stores a signal for the execution, once per `signal_id` (control.signal)."""
        return await control.signal(self, execution_id, name, data, tenant, signal_id)

    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        """Stores a signal (a known id returns the stored one, False) and hands a new one to
        the run that owns its execution, here or, through the store, on another replica."""
        stored, created = await self.store.add_signal(signal)
        if created and not self.runs.signal_stored(stored):  # here, loaded or not
            await self.store.notify("signal", signal.execution_id)  # its owner runs elsewhere
        return stored, created

    async def list_waits(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        limit: int = 100,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[approvals.WaitView]:
        """Pending waits for a signal of `tenant` (approvals.list_waits)."""
        return await approvals.list_waits(
            self, tenant, limit=limit, after=after, execution_id=execution_id
        )

    async def answer_wait(
        self, *, data: Any, wait_id: str = "", token: str = "", tenant: str = DEFAULT_TENANT
    ) -> tuple[ExecutionRecord, approvals.WaitView]:
        """Answers one wait by id or callback token, once (approvals.answer_wait)."""
        return await approvals.answer_wait(
            self, tenant=tenant, data=data, wait_id=wait_id, token=token
        )

    async def plan_of(self, record: ExecutionRecord) -> DagPlan | None:
        """The plan an execution runs (compiled once per workflow version), None when its
        workflow version is gone."""
        return await self.workflows.plan_of(record)

    async def pause(self, execution_id: str, *, tenant: str = DEFAULT_TENANT) -> ExecutionRecord:
        return await control.apply(
            self,
            execution_id,
            tenant,
            "pause",
            allowed={ExecutionState.PENDING, ExecutionState.RUNNING, ExecutionState.WAITING},
        )

    async def resume(
        self,
        execution_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        node_id: str = "",
        args: Any = None,
        with_args: bool = False,
    ) -> ExecutionRecord:
        """Resumes a paused execution; `node_id` names the node it is paused on (`on_exhausted:
        pause`), `with_args` gives that node `args` for its next attempts (control.check_override)."""
        override = None
        if with_args and not node_id:
            raise InvalidInput([Diagnostic("node_id", "is required with args")])
        if node_id:
            await control.check_override(
                self,
                await self.get_execution(execution_id, tenant=tenant),
                node_id,
                args,
                with_args,
            )
            override = {"node": node_id, "args": args} if with_args else {"node": node_id}
        return await control.apply(
            self, execution_id, tenant, "resume", allowed={ExecutionState.PAUSED}, override=override
        )

    async def control_many(
        self,
        action: str,
        *,
        tenant: str = DEFAULT_TENANT,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
        limit: int = 100,
        after_id: str | None = None,
        compensate: bool = False,
    ) -> tuple[list[control.Outcome], str | None]:
        """Pause, resume or cancel a page of the executions a filter matches (control.control_many)."""
        return await control.control_many(
            self,
            action,
            tenant=tenant,
            workflow=workflow,
            states=states,
            limit=limit,
            after_id=after_id,
            compensate=compensate,
        )

    async def cancel(
        self, execution_id: str, *, tenant: str = DEFAULT_TENANT, compensate: bool = False
    ) -> ExecutionRecord:
        return await control.apply(
            self, execution_id, tenant, "cancel", allowed=None, compensate=compensate
        )

    # --------------------------------------------------------------- events
    async def list_events(
        self,
        execution_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        after_sequence: int = 0,
        limit: int = 1000,
    ) -> list[EventRecord]:
        return await self.reads.log(execution_id, tenant, after_sequence, limit)

    async def watch(
        self, execution_id: str, *, tenant: str = DEFAULT_TENANT, after_sequence: int = 0
    ) -> AsyncIterator[EventRecord]:
        """The stored backlog, then live events; each once, in order; ends after the final one
        (RunReads.watch)."""
        async for event in self.reads.watch(execution_id, tenant, after_sequence):
            yield event

    def _check_open(self) -> None:
        if self.draining:
            raise ShuttingDown("the server is shutting down and takes no new work")


_FINAL_EVENTS = frozenset(f"execution.{s.value.lower()}" for s in ExecutionState if s.terminal)


def _is_final(event: EventRecord) -> bool:
    return event.type in _FINAL_EVENTS
