"""The DAG runs live in this process (the engine's side of them): started, resumed from the
store after a restart, an adoption or a store failure, stopped when their lease is lost or the
engine drains, ended (waiters answered, the admission place given back), and waited for.

`Engine` keeps one `LiveRuns` and reaches its runs only through it and `DagRun`'s public
methods."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import TYPE_CHECKING

from agentrun.engine.dag.loop import DagRun
from agentrun.engine.dag.messages import Message
from agentrun.engine.plan import DagPlan
from agentrun.storage.base import LeaseLost
from agentrun.storage.records import Batch, ExecutionRecord, ExecutionState, NodeRecord

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

log = logging.getLogger("agentrun.engine")


class LiveRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.live: dict[str, DagRun] = {}
        # Callers of `wait` for an execution that runs here, answered when it ends.
        self.waiters: dict[str, list[asyncio.Future[ExecutionRecord]]] = {}

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self.live

    def get(self, execution_id: str) -> DagRun | None:
        return self.live.get(execution_id)

    def post(self, execution_id: str, message: Message) -> bool:
        """Posts to the execution's run if it runs here and has not finished."""
        run = self.live.get(execution_id)
        if run is None or run.finished:
            return False
        run.post(message)
        return True

    # ------------------------------------------------------------ starting
    def start(self, plan: DagPlan, record: ExecutionRecord) -> None:
        """A new execution: RUNNING, its roots resolved, its loop launched."""
        run = DagRun(self.engine, plan, record)
        run.start_fresh()
        self._launch(run)

    def begin(self, plan: DagPlan, record: ExecutionRecord) -> tuple[DagRun, Batch]:
        """A new execution's run and its first turn (`DagRun.first_turn`), not launched: the
        engine stores the batch with the execution's creation, then calls `launch`."""
        run = DagRun(self.engine, plan, record)
        return run, run.first_turn()

    def launch(self, run: DagRun, first: Batch, seconds: float) -> None:
        """A run begun with `begin` whose first turn is stored: its loop launched."""
        run.committed_first(first, seconds)
        self._launch(run)

    def start_rerun(self, plan: DagPlan, record: ExecutionRecord, reused: list[NodeRecord]) -> None:
        """A rerun: its reused nodes SUCCEEDED already, the rest run."""
        run = DagRun(self.engine, plan, record)
        run.restore(reused, [], fresh=True)
        self._launch(run)

    async def resume_all(self, records: list[ExecutionRecord]) -> None:
        """Resumes claimed executions (at start, adopted orphans); one that fails to resume
        is retried later."""
        for record in sorted(records, key=lambda r: r.id):
            if record.id in self.live:
                continue
            try:
                await self.resume(record)
            except Exception:
                log.warning("could not resume execution %s; retrying", record.id, exc_info=True)
                self._schedule_resume(record.id)

    async def resume(self, record: ExecutionRecord) -> None:
        """Rebuilds a run from the store (a PENDING one starts) once admission lets it run."""
        engine = self.engine
        plan = await engine.plan_of(record)
        if plan is None:
            log.error(
                "execution %s: workflow %s v%s is gone", record.id, record.workflow, record.version
            )
            return
        key = (
            engine.concurrency_key(plan, record.tenant, record.input)
            if record.parent_id is None
            else None
        )
        if record.parent_id is None and not await engine.admission.resume(
            record.id,
            record.tenant,
            key,
            plan.concurrency_limit,
            pending=record.state is ExecutionState.PENDING,
        ):
            return
        run = DagRun(engine, plan, record)
        if record.state is ExecutionState.PENDING:
            run.start_fresh()
        else:
            nodes = await engine.store.get_nodes(record.id)
            signals = await engine.store.pending_signals(record.id)
            run.restore(nodes, signals)
        self._launch(run)

    async def start_admitted(self, execution_id: str) -> None:
        """A queued execution admission lets run now."""
        record = await self.engine.store.get_execution(execution_id)
        if (
            record is None
            or record.state is not ExecutionState.PENDING
            or execution_id in self.live
        ):
            return
        plan = await self.engine.plan_of(record)
        if plan is not None:
            self.start(plan, record)

    def admitted_here(self, execution_id: str) -> None:
        asyncio.get_running_loop().create_task(self.start_admitted(execution_id))

    async def deliver_signals(self, execution_id: str) -> None:
        """A signal was stored for an execution that runs here (by another replica)."""
        run = self.live.get(execution_id)
        if run is None or run.finished:
            return
        for signal in await self.engine.store.pending_signals(execution_id):
            run.deliver_signal(signal)

    def _launch(self, run: DagRun) -> None:
        engine = self.engine
        self.live[run.id] = run
        if engine.instrumentation is not None:
            engine.instrumentation.execution_started(run.record)
        task = asyncio.get_running_loop().create_task(run.loop(), name=f"execution {run.id}")
        run.task = task
        task.add_done_callback(lambda _task: self._ended(run))

    # ------------------------------------------------------------ stopping
    def _ended(self, run: DagRun) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        if self.live.get(run.id) is run:
            del self.live[run.id]
        if run.finished or (run.task is not None and run.task.cancelled() and not engine.draining):
            loop.create_task(self._admission_freed(run.id, ended=run.finished))
        task = run.task
        if run.lease_lost or (
            task is not None and not task.cancelled() and isinstance(task.exception(), LeaseLost)
        ):
            log.warning("execution %s: lease lost to another replica; stopped here", run.id)
            if self.waiters.get(run.id):
                loop.create_task(self._hand_over_waiters(run.id))
            return
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("execution %s stopped: %r", run.id, task.exception())
            if not engine.draining:
                # The store holds the truth: rebuild from it after a pause (e.g. the database
                # was briefly unavailable).
                loop.call_later(1.0, self._schedule_resume, run.id)
            return
        if run.finished:
            record = copy.copy(run.record)
            if engine.redactor:
                record.output = engine.redactor.value(record.output)
                record.error = engine.redactor.value(record.error)
                record.vars = engine.redactor.value(record.vars)
            if engine.instrumentation is not None:
                engine.instrumentation.execution_ended(record)
            self.answer_waiters(run.id, record)

    async def _admission_freed(self, execution_id: str, *, ended: bool) -> None:
        """A run stopped: the executions its place admits start (here, or on the replica
        holding them, told through the notification channel)."""
        try:
            admitted = await self.engine.admission.finished(execution_id, ended=ended)
        except Exception:
            log.warning(
                "could not give back the place of execution %s; reaped later",
                execution_id,
                exc_info=True,
            )
            return
        for admitted_id in admitted:
            await self.start_admitted(admitted_id)

    def _schedule_resume(self, execution_id: str, delay: float = 1.0) -> None:
        """Rebuilds a run that stopped on a store failure, retrying (with backoff) until the
        store answers again; a lease taken meanwhile by another replica ends the attempts."""
        engine = self.engine

        async def resume() -> None:
            if engine.draining or execution_id in self.live:
                return
            try:
                record = await engine.store.get_execution(execution_id)
                if record is None or record.state.terminal or record.owner != engine.replica_id:
                    return
                await self.resume(record)
            except Exception:
                log.warning(
                    "resuming %s failed; retrying in %.1fs", execution_id, delay, exc_info=True
                )
                asyncio.get_running_loop().call_later(
                    delay, self._schedule_resume, execution_id, min(delay * 2, 10.0)
                )

        asyncio.get_running_loop().create_task(resume())

    def stop_lost(self, before: set[str], owned: set[str]) -> None:
        """A lease renewal answered `owned`: a run that existed before it was read (`before`)
        and is not owned any more stops at once (its commits would be refused anyway)."""
        for run in list(self.live.values()):
            if (
                run.id in before
                and run.id not in owned
                and not run.finished
                and run.task is not None
            ):
                log.warning("lease on execution %s was lost; stopping it here", run.id)
                run.lease_lost = True
                run.task.cancel()

    async def drain(self, grace: float) -> list[str]:
        """Lets running calls finish within `grace`, then stops every run; returns the ids of
        the unfinished executions (their leases to hand back)."""
        engine = self.engine
        deadline = engine.clock() + grace
        while engine.clock() < deadline and any(run.busy for run in self.live.values()):
            await asyncio.sleep(0.02)
        detached = [run.id for run in self.live.values() if not run.finished]
        tasks = [run.task for run in self.live.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return detached

    # ------------------------------------------------------------ waiting
    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord | None:
        """The execution's final record once its run here ends; None if it does not run here."""
        if execution_id not in self.live:
            return None
        # Registered before any await: the run's end (even one already under way) resolves it.
        fut: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(execution_id, []).append(fut)
        return await asyncio.wait_for(fut, timeout)

    async def poll_terminal(self, execution_id: str, timeout: float | None) -> ExecutionRecord:
        """Reads the store until the execution is final (queued, starting, or run by another
        replica); hands over to the run if it starts here meanwhile."""
        store = self.engine.store
        async with asyncio.timeout(timeout):
            while True:
                record = await store.get_execution(execution_id)
                if record is not None and record.state.terminal:
                    return record
                run = self.live.get(execution_id)
                if run is not None and not run.finished:
                    final = await self.wait(execution_id)
                    if final is not None:
                        return final
                await asyncio.sleep(0.05)

    def answer_waiters(self, execution_id: str, record: ExecutionRecord) -> None:
        for fut in self.waiters.pop(execution_id, []):
            if not fut.done():
                fut.set_result(record)

    async def _hand_over_waiters(self, execution_id: str) -> None:
        """Waiters of a run that moved to another replica learn its end from the store."""
        record = await self.poll_terminal(execution_id, None)
        self.answer_waiters(execution_id, record)
