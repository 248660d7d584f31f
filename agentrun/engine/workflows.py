"""`Workflows`: the workflow versions an engine runs, for both interpreters.

Stored specs are compiled once per (tenant, name, version) in this process, whichever kind
they are, and each interpreter asks for its own kind: `dag_plan` for an execution (a state
machine is refused: it runs as instances), `machine_plan` for an instance (a DAG is refused:
it runs as executions). Starts read a workflow through a short-lived cache, so a start costs
no store read and an update made on another replica is seen within WORKFLOW_CACHE_SECONDS.
When an entry expires, the next start reads only the live version's number (a new version or
a delete made elsewhere shows there); the version's record itself, its spec decoded, is read
once and kept (RECORDS_KEPT, least recently used out): a stored version never changes.

Compiled plans are kept the same way (`LRU` weighed in nodes: PLAN_NODES_KEPT nodes' worth,
least recently used out), so a caller who registers many versions, or many tenants' workflows,
does not grow the server's memory without limit: a plan dropped is compiled again from its
stored record when next needed (`plan`), and a run holds its own plan whatever is dropped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from agentrun.engine.compiler import compile_stored, compile_workflow
from agentrun.engine.errors import Diagnostic, InvalidInput, WorkflowNotFound
from agentrun.engine.loader import spec_from_stored
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.plan import DagPlan
from agentrun.engine.ports import AgentProviders, ToolRegistry
from agentrun.storage.base import Store
from agentrun.storage.records import ExecutionRecord, WorkflowRecord
from agentrun.v1 import workflow_pb2

WORKFLOW_CACHE_SECONDS = 1.0
# Versions whose records (their specs decoded) starts keep: the ones started recently.
RECORDS_KEPT = 64
# Compiled plans kept, weighed in nodes (a machine's states), least recently used out. A plan
# takes ~0.6 KiB a pass node and ~2.2 KiB a tool node with expressions (tracemalloc), so this
# bounds the cache to ~45 MB at most, while it holds the working set of a normal fleet hot:
# 200 versions of 100 nodes (tens of workflows per tenant, a few live versions each, and the
# older versions long executions still run). The most recent plan is kept whatever its size.
# A version used after it dropped out is compiled again, in a thread (0.6 to 1.9 ms of CPU
# per 100 nodes, measured as the sizes above).
PLAN_NODES_KEPT = 20_000

_Key = tuple[str, str, int]
_Plan = DagPlan | MachinePlan
_V = TypeVar("_V")


def _plan_weight(plan: _Plan) -> int:
    """A plan's size in the plans' cache unit: its nodes (a machine's states), plus one."""
    return 1 + len(plan.nodes if isinstance(plan, DagPlan) else plan.states)


class LRU(Generic[_V]):
    """Values by (tenant, name, version), least recently used first, at most `bound` in
    total weight (`weight` of each value; 1 each by default): the one bounded cache of this
    module, for plans (weighed in nodes) and for records (counted). The most recent value is
    kept whatever its weight, so a plan larger than the bound still serves its starts."""

    def __init__(self, bound: int, weight: Callable[[_V], int] = lambda _: 1) -> None:
        self.bound = bound
        self._weigh = weight
        self._kept: OrderedDict[_Key, _V] = OrderedDict()
        self.weight = 0

    def get(self, key: _Key) -> _V | None:
        value = self._kept.get(key)
        if value is not None:
            self._kept.move_to_end(key)
        return value

    def setdefault(self, key: _Key, value: _V) -> _V:
        """The value kept for `key`, `value` if none was (concurrent compiles of a version
        share the first kept); the least recently used out beyond the bound."""
        kept = self._kept
        old = kept.get(key)
        if old is not None:
            kept.move_to_end(key)
            return old
        kept[key] = value
        self.weight += self._weigh(value)
        while self.weight > self.bound and len(kept) > 1:
            self.weight -= self._weigh(kept.popitem(last=False)[1])
        return value

    def put(self, key: _Key, value: _V) -> None:
        """Keeps `value` for `key`, replacing any kept."""
        old = self._kept.pop(key, None)
        if old is not None:
            self.weight -= self._weigh(old)
        self.setdefault(key, value)

    def drop(self, tenant: str, name: str) -> None:
        """Drops every version of one workflow."""
        for key in [k for k in self._kept if k[0] == tenant and k[1] == name]:
            self.weight -= self._weigh(self._kept.pop(key))

    def clear(self) -> None:
        self._kept.clear()
        self.weight = 0

    def kept(self) -> list[_Key]:
        """The keys kept, least recently used first."""
        return list(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


class Workflows:
    def __init__(
        self,
        store: Store,
        *,
        tools: ToolRegistry,
        agents: AgentProviders,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.tools = tools
        self.agents = agents
        self.clock = clock
        self.plans: LRU[_Plan] = LRU(PLAN_NODES_KEPT, _plan_weight)
        self._cache: dict[_Key, tuple[WorkflowRecord, float]] = {}
        # Per stored version (immutable): its record, read once (deleted with the workflow).
        self.records: LRU[WorkflowRecord] = LRU(RECORDS_KEPT)
        self._reading: dict[_Key, asyncio.Future[WorkflowRecord]] = {}
        self._compiling: dict[_Key, asyncio.Future[DagPlan | MachinePlan]] = {}

    def validate(self, spec: workflow_pb2.WorkflowSpec) -> DagPlan | MachinePlan:
        """The spec's plan, or InvalidWorkflow with every problem."""
        return compile_workflow(spec, tools=self.tools, agents=self.agents)

    async def create(self, spec: workflow_pb2.WorkflowSpec, tenant: str) -> WorkflowRecord:
        """Stores a new version of the spec once it compiles."""
        # Compiling a large workflow takes a few hundred ms: off the loop, which keeps serving.
        plan, stored = await asyncio.to_thread(self._compile, spec)
        record = await self.store.create_workflow(
            WorkflowRecord(
                tenant=tenant,
                name=spec.name,
                version=0,
                spec=stored,
                created_at=self.clock(),
                description=spec.description,
            )
        )
        self.plans.put((tenant, record.name, record.version), plan)
        self._forget(tenant, record.name)
        self._keep(record)
        return record

    def _compile(
        self, spec: workflow_pb2.WorkflowSpec
    ) -> tuple[DagPlan | MachinePlan, dict[str, Any]]:
        """The plan and the stored form (built in one walk that checks the values too)."""
        return compile_stored(spec, tools=self.tools, agents=self.agents)

    async def get(self, name: str, tenant: str, version: int | None) -> WorkflowRecord:
        """A stored version (None or 0: the newest), or WorkflowNotFound."""
        record = await self.store.get_workflow(tenant, name, version or None)
        if record is None:
            suffix = f" version {version}" if version else ""
            raise WorkflowNotFound(f"workflow {name!r}{suffix} not found", name=name)
        return record

    async def _live(self, name: str, tenant: str, version: int | None) -> WorkflowRecord:
        """`get` for `cached`: the live version's number, then its record from those kept
        (read and kept on a miss). A start after the cache expired used to read the whole row
        and decode the spec again (~700 µs of CPU for a 100-node spec on SQLite)."""
        number = await self.store.workflow_version(tenant, name, version or None)
        if number is None:
            suffix = f" version {version}" if version else ""
            raise WorkflowNotFound(f"workflow {name!r}{suffix} not found", name=name)
        key = (tenant, name, number)
        record = self.records.get(key)
        if record is None:
            record = await self.get(name, tenant, number)
            self._keep(record)
        return record

    def _keep(self, record: WorkflowRecord) -> None:
        self.records.put((record.tenant, record.name, record.version), record)

    async def delete(self, name: str, tenant: str) -> None:
        """Deletes every version (softly: running executions keep theirs)."""
        self._forget(tenant, name)
        if not await self.store.delete_workflow(tenant, name):
            raise WorkflowNotFound(f"workflow {name!r} not found", name=name)
        self.plans.drop(tenant, name)
        self.records.drop(tenant, name)

    async def cached(self, name: str, tenant: str, version: int | None) -> WorkflowRecord:
        """`get` through the short-lived cache that starts read. Concurrent misses share one
        read: a burst of starts when the entry expires costs one store read, not one each
        (500 concurrent starts used to read the workflow 500 times and exhaust SQLite's
        read pool)."""
        key = (tenant, name, version or 0)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._live(name, tenant, version))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._read(key, done, now))
        return await asyncio.shield(reading)

    def _read(self, key: _Key, done: asyncio.Future[WorkflowRecord], started: float) -> None:
        if self._reading.get(key) is not done:
            return  # forgotten meanwhile (an update or a delete): not cached
        del self._reading[key]
        if not done.cancelled() and done.exception() is None:
            self._cache[key] = (done.result(), started + WORKFLOW_CACHE_SECONDS)

    def _forget(self, tenant: str, name: str) -> None:
        for key in [k for k in self._cache if k[0] == tenant and k[1] == name]:
            del self._cache[key]
        for key in [k for k in self._reading if k[0] == tenant and k[1] == name]:
            del self._reading[key]

    def cached_plan(self, tenant: str, name: str, version: int) -> DagPlan | MachinePlan | None:
        """The plan compiled when this version was created or last used here, if it is still
        kept (PLAN_NODES_KEPT): None does not say the version is gone (`plan` compiles it)."""
        return self.plans.get((tenant, name, version))

    async def plan(self, record: WorkflowRecord) -> DagPlan | MachinePlan:
        """The plan of a stored version, compiled once while it is kept (`plans`): the
        first use of a version this process did not create (after a restart, created by
        another replica, or dropped from the cache since) compiles it in a thread, as `create`
        does, so a large workflow (~150 ms for 10,000 nodes) does not stop the loop;
        concurrent first uses share that compile."""
        key = (record.tenant, record.name, record.version)
        plan = self.plans.get(key)
        if plan is not None:
            return plan
        compiling = self._compiling.get(key)
        if compiling is None:
            spec = record.spec
            compiling = asyncio.ensure_future(
                asyncio.to_thread(lambda: self.validate(spec_from_stored(spec)))
            )
            self._compiling[key] = compiling
            compiling.add_done_callback(lambda done: self._compiled(key, done))
        return await asyncio.shield(compiling)

    def _compiled(self, key: _Key, done: asyncio.Future[DagPlan | MachinePlan]) -> None:
        if self._compiling.get(key) is done:
            del self._compiling[key]
            if not done.cancelled() and done.exception() is None:
                self.plans.setdefault(key, done.result())

    async def dag_plan(self, record: WorkflowRecord) -> DagPlan:
        """The DAG plan of a stored version; a state machine is refused: it runs as
        instances (MachineEngine), never as an execution."""
        match await self.plan(record):
            case DagPlan() as plan:
                return plan
            case MachinePlan():
                raise InvalidInput(
                    [
                        Diagnostic(
                            "workflow",
                            f"{record.name!r} is a state machine: create an instance with CreateInstance",
                        )
                    ]
                )

    async def machine_plan(self, record: WorkflowRecord) -> MachinePlan:
        """The state machine plan of a stored version; a DAG is refused: it runs as
        executions, never as an instance."""
        match await self.plan(record):
            case MachinePlan() as plan:
                return plan
            case DagPlan():
                raise InvalidInput(
                    [
                        Diagnostic(
                            "workflow",
                            f"workflow {record.name!r} is a DAG; start it with StartExecution",
                        )
                    ]
                )

    async def plan_of(self, record: ExecutionRecord) -> DagPlan | None:
        """The plan an execution runs, None when its workflow version is gone."""
        match self.cached_plan(record.tenant, record.workflow, record.version):
            case DagPlan() as plan:
                return plan
        workflow = await self.store.get_workflow(
            record.tenant, record.workflow, record.version, include_deleted=True
        )
        return None if workflow is None else await self.dag_plan(workflow)
