"""Starting executions: a StartExecution from the checked request to a stored execution that
runs here, waits in its tenant's line, or is refused.

`Starts.start` checks the input, the tenant's pending quota and the concurrency key, then
stores the execution: with its first turn in one commit when admission lets it run at once
(`_store_begun`), else PENDING for the admission to start later; a repeated `request_id`
returns the stored execution (another payload: AlreadyExists; a row nobody runs: adopted).
`cancel_pending` ends an execution that never started (queued, or refused by
`cancel_newest`). `Engine.start_execution` and the engine's other methods call these.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentrun.engine.dag.messages import Cancel
from agentrun.engine.errors import Diagnostic, InvalidInput, ResourceExhausted
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import DagPlan
from agentrun.engine.runtime.requests import (
    checked_input,
    new_execution_id,
    refuse_changed_repeat,
    request_fingerprint,
)
from agentrun.storage.records import Batch, EventRecord, ExecutionRecord, ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.dag import DagRun
    from agentrun.engine.engine import Engine


class Starts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # a weak proxy: the engine holds this

    async def start(
        self,
        workflow: str,
        input: Any,
        tenant: str,
        version: int | None,
        request_id: str | None,
        priority: int,
        execution_id: str | None,
        parent: tuple[str, str] | None,
        labels: Mapping[str, str] | None,
    ) -> ExecutionRecord:
        """Starts an execution (`Engine.start_execution`); a repeated `request_id` with the
        same payload returns the first."""
        engine = self.engine
        engine.check_open()
        wf = await engine.workflows.cached(workflow, tenant, version)
        plan = await engine.workflows.dag_plan(wf)
        input = checked_input(input, plan.input_schema)
        key = self.concurrency_key(plan, tenant, input)
        max_pending = engine.admission.config.max_pending_executions_per_tenant
        pending = 0
        if parent is None:
            # Without a coroutine when admission needs no read (no quota, no key: most starts).
            now_known = engine.admission.pending_now(tenant)
            pending = (
                now_known if now_known is not None else await engine.admission.pending_count(tenant)
            )
        if parent is None and (pending >= max_pending or engine.scheduler.would_overflow()):
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
        now = engine.clock()
        record = ExecutionRecord(
            id=execution_id or new_execution_id(engine.clock),
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
            owner=engine.replica_id,
            lease_epoch=1,
            lease_expires_at=now + engine.lease_seconds,
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
        # (`record` itself: a begun start does not read it again; the run's copy would be
        # the second of three copies per start.)
        begun = (
            engine.runs.begin(plan, record) if parent or engine.admission.unlimited(key) else None
        )
        if begun is None:
            stored, created = await engine.store.create_execution(record, events=[event])
        else:
            stored, created = await self._store_begun(*begun, event, plan, key, parent is None)
        if not created:
            refuse_changed_repeat(stored.request_hash, request_hash, request_id)
            await self._adopt_if_idle(stored)
            return stored
        if begun is not None:
            return stored
        admitted = (
            await engine.admission.arrive(
                record.id, tenant, key, plan.concurrency_limit, plan.concurrency_on_limit
            )
            if parent is None
            else None
        )
        if admitted is None or admitted.verdict == "run":
            engine.runs.start(plan, copy.copy(record))
            return stored
        if admitted.verdict == "cancel_newest" and key is not None:
            return await self.cancel_pending(
                stored, f"concurrency limit {plan.concurrency_limit} reached for key {key[2]!r}"
            )
        for old_id in admitted.cancel:
            if old_id in engine.runs:
                engine.runs.post(old_id, Cancel())
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
        with the same request id finds the execution running.

        The run is launched by the commit's own callback (`admission.unlimited` let this start
        run, so its admission is decided without a coroutine), which then answers the caller:
        no shield, no task and no coroutine between the commit and the launch."""
        engine = self.engine
        assert first.execution is not None
        started = time.perf_counter()
        # The run's own record, uncopied: a store copies what it keeps (and gives a copy
        # back), and the run does not change it before it is launched, after the create.
        # Under way whether or not this caller stays (`create_execution_soon`: on SQL, the
        # group commit's future itself, no task).
        creating = engine.store.create_execution_soon(
            first.execution, nodes=first.nodes, events=[event, *first.events]
        )
        # On the commit's own loop: `asyncio.get_running_loop()` is a getpid() system call
        # on CPython 3.11.
        answer: asyncio.Future[tuple[ExecutionRecord, bool]] = creating.get_loop().create_future()

        def launch() -> None:
            if admit:  # admission lets it run without asking; it keeps its count
                engine.admission.arrive_unlimited(run.id, run.record.tenant)
            if run.id not in engine.runs:
                engine.runs.launch(run, first, time.perf_counter() - started)

        def settled(done: asyncio.Future[tuple[ExecutionRecord, bool]]) -> None:
            """The commit's outcome, whether or not the caller still waits for it."""
            if done.cancelled():
                answer.cancel()
                return
            error = done.exception()
            if error is None and done.result()[1]:
                try:
                    launch()
                except Exception as exc:
                    if answer.done():
                        raise  # nobody waits: the loop's exception handler reports it
                    error = exc
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())

        creating.add_done_callback(settled)
        try:
            return await answer
        except Exception:
            if creating.done() and not creating.cancelled() and creating.exception() is not None:
                # The commit failed: it may have happened all the same.
                if await self._stored_as_begun(run):
                    launch()
            raise

    async def _stored_as_begun(self, run: DagRun) -> bool:
        """After a failed create: whether its commit happened all the same (the row is there,
        still this replica's)."""
        engine = self.engine
        try:
            row = await engine.store.get_execution(run.id)
        except Exception:
            return False
        return (
            row is not None
            and row.owner == engine.replica_id
            and row.lease_epoch == run.record.lease_epoch
        )

    async def _cancel_elsewhere(self, execution_id: str, tenant: str) -> None:
        engine = self.engine
        with contextlib.suppress(Exception):
            await engine.cancel(execution_id, tenant=tenant)

    async def _adopt_if_idle(self, record: ExecutionRecord) -> None:
        """A start repeated after an ambiguous failure (the row was written, the caller saw an
        error) finds an execution nobody runs yet: this replica runs it."""
        engine = self.engine
        if (
            record.state.terminal
            or record.id in engine.runs
            or engine.admission.waiting(record.id)
            or record.owner != engine.replica_id
        ):
            return
        await engine.runs.resumes.one(record)

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
        engine = self.engine
        await engine.admission.forget(record.id)
        now = engine.clock()
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
        await engine.store.commit(
            Batch(
                execution=record,
                events=[event],
                fence=(record.owner, record.lease_epoch) if record.owner else None,
            )
        )
        engine.hub.publish(record.id, [event])
        engine.runs.answer_waiters(record.id, copy.copy(record))
        return copy.copy(record)
