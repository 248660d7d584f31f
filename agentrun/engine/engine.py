"""The engine façade: workflows, executions, signals, control and watching.

Plain asyncio; knows nothing of gRPC. The server and the CLI build one Engine over a
Store and call these methods; engine errors carry stable reasons the server maps to
status codes in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack, cast

from agentrun.engine import approvals, control
from agentrun.engine.admission import SharedAdmission, make_admission
from agentrun.engine.breakers import Breakers
from agentrun.engine.budgets import BudgetConfig, Budgets, BudgetSpec
from agentrun.engine.config import EngineConfig
from agentrun.engine.dag import DagRun
from agentrun.engine.dag.messages import Fail, Pause, Resume
from agentrun.engine.dag.runs import LiveRuns
from agentrun.engine.errors import (
    Diagnostic,
    ExecutionNotFound,
    InvalidInput,
    ShuttingDown,
    WorkflowNotFound,
)
from agentrun.engine.fleet import make_scheduler
from agentrun.engine.hub import Hub
from agentrun.engine.json_values import unstorable
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.node_view import every_node, spec_node_ids
from agentrun.engine.plan import DagPlan, WorkflowStep
from agentrun.engine.ports import AgentProviders, ToolRegistry
from agentrun.engine.redact import Redactor
from agentrun.engine.rerun import rerun
from agentrun.engine.runtime.children import run_child
from agentrun.engine.runtime.common import DEFAULT_TENANT
from agentrun.engine.runtime.reads import LogPage, RunFilter, RunReads, Since
from agentrun.engine.runtime.redaction import redacted_execution
from agentrun.engine.runtime.requests import StartOptions, start_options
from agentrun.engine.scheduler import SchedulerConfig
from agentrun.engine.starts import Starts
from agentrun.engine.upkeep import Upkeep
from agentrun.engine.workflows import Workflows
from agentrun.storage.base import Store
from agentrun.storage.budgets import ledger_for
from agentrun.storage.records import (
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


class ExecutionFilter(RunFilter[ExecutionState], total=False):
    """What `Engine.list_executions` keeps: RunFilter's, and executions created in
    [`created_after`, `created_before`), newest first with `newest_first`."""

    created_after: float | None
    created_before: float | None
    newest_first: bool


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
        # StartExecution's path to a stored, admitted execution (starts.py).
        self.starts = Starts(cast("Engine", me))
        # Leases renewed, orphans adopted, the event log maintained (upkeep.py).
        self.upkeep = Upkeep(cast("Engine", me))

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Claims and resumes unfinished executions (this replica's own at once, others'
        once their leases expired) and keeps leases renewed (from the start: a long claim
        keeps what it claimed first) and orphans adopted."""
        if self._started:
            return
        self._started = True
        self.store.listen(self._on_notification)
        self.store.watch(self.hub.watched)
        await self.scheduler.start()
        self.upkeep.start()
        if self.config.adopt:
            await self.upkeep.claim_at_start()
        await self.upkeep.upkeep_events()
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
        self.check_open()
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
        """The plan compiled when this version was created or last run here, if the bounded
        plan cache still keeps it (either kind: `create_workflow` compiles state machines
        too); None: the caller compiles it again from the stored record."""
        return self.workflows.cached_plan(tenant, name, version)

    async def _plan(self, record: WorkflowRecord) -> DagPlan:
        """The DAG plan of a stored version (a state machine is refused: Workflows.dag_plan)."""
        return await self.workflows.dag_plan(record)

    # ------------------------------------------------------------ executions
    async def start_execution(
        self,
        workflow: str,
        input: Any = None,
        *,
        priority: int = 0,
        execution_id: str | None = None,
        **options: Unpack[StartOptions],
    ) -> ExecutionRecord:
        """Starts an execution; a repeated `request_id` with the same payload returns the first
        (starts.py)."""
        options = start_options(options)
        return await self.starts.start(
            workflow,
            input,
            options.get("tenant", DEFAULT_TENANT),
            options.get("version"),
            options.get("request_id"),
            priority,
            execution_id,
            options.get("parent"),
            options.get("labels"),
        )

    def concurrency_key(
        self, plan: DagPlan, tenant: str, input: Any
    ) -> tuple[str, str, str] | None:
        """The execution's concurrency key (tenant, workflow, the key's value), if its plan
        has one."""
        return self.starts.concurrency_key(plan, tenant, input)

    async def cancel_pending(self, record: ExecutionRecord, message: str) -> ExecutionRecord:
        """Ends an execution that never started (queued, or refused by `cancel_newest`)."""
        return await self.starts.cancel_pending(record, message)

    def _announce(self, kind: str, execution_id: str) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await self.store.notify(kind, execution_id)

        asyncio.get_running_loop().create_task(send())

    async def run_child(
        self, *, parent_id: str, tenant: str, key: str, attempt: int, step: WorkflowStep, input: Any
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
        self.check_open()
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
        self, *, tenant: str = DEFAULT_TENANT, limit: int = 100, **keep: Unpack[ExecutionFilter]
    ) -> list[ExecutionRecord]:
        """A page of `tenant`'s executions that `keep` keeps (ExecutionFilter)."""
        return await self.store.list_executions(tenant, limit=limit, **keep)

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

    async def offer_signal(
        self,
        signal: SignalRecord,
        tenant: str,
        *,
        check: Callable[[], None] | None = None,
        fresh_id: bool = False,
    ) -> ExecutionRecord | None:
        """Hands `signal`, not stored yet, to its execution's run here (loaded if it waits
        unloaded): the turn that applies it stores it, so the signal and its effect are one
        commit, and this returns after that commit (a run that stops first fails it with
        Unavailable: nothing answered is lost). `signal.consumed_by` then says what the turn
        did: its consumer (a wait's key, or `refused:REASON`), or None when the run declined
        it (`Waits.offer`: no wait takes it now, or one offered before it was declined), and
        its caller stores it as any signal (`add_signal`). Returns the execution's record
        after that turn, or None when it was not handed over and is to be stored first: the
        run is not here (another replica, queued, ended), the engine drains, its id is stored
        already (a repeat: answered as the first call was; not looked up for a `fresh_id`),
        or its data cannot be stored. `check` validates the request once the run is known to
        be `tenant`'s, as the stored way validates after the tenant's record is read."""
        runs = self.runs
        execution_id = signal.execution_id
        if self.draining or execution_id not in runs:
            return None
        if not fresh_id:
            if await self.store.get_signal(execution_id, signal.signal_id) is not None:
                return None
        run = runs.get(execution_id) or await runs.load(execution_id)
        # No await from here to the offer: the run cannot leave memory or end in between.
        if run is None or run.record.tenant != tenant:
            return None
        if check is not None:
            check()
        task = run.task
        if run.finished or task is None or task.done() or unstorable(signal.data) is not None:
            return None
        await run.offer_signal(signal)
        return redacted_execution(run.record, self.redactor)

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
    async def list_events(self, execution_id: str, **page: Unpack[LogPage]) -> list[EventRecord]:
        """The execution's events after `after_sequence`, at most `limit` (RunReads.log)."""
        return await self.reads.log(execution_id, **page)

    def watch(self, execution_id: str, **since: Unpack[Since]) -> AsyncIterator[EventRecord]:
        """The stored backlog, then live events; each once, in order; ends after the final one
        (RunReads.watch)."""
        return self.reads.watch(execution_id, **since)

    def check_open(self) -> None:
        if self.draining:
            raise ShuttingDown("the server is shutting down and takes no new work")


_FINAL_EVENTS = frozenset(f"execution.{s.value.lower()}" for s in ExecutionState if s.terminal)


def _is_final(event: EventRecord) -> bool:
    return event.type in _FINAL_EVENTS
