"""Runs rebuilt from the store: the executions a start or the claim loop took (`all`, in
batches, one `restore_reads` each), and one execution again after a store failure or an
admission (`one`). An execution that admission does not let run yet is not rebuilt: its
place frees it later. Rebuilt runs that only wait go straight to `LiveRuns.idle`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agentrun.engine.dag.loop import DagRun
from agentrun.engine.plan import DagPlan
from agentrun.storage.records import ExecutionRecord, ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.dag.runs import LiveRuns

log = logging.getLogger("agentrun.engine")

# Executions resumed together (one `restore_reads` each batch): a small first batch, so the
# first steps run again at once after a restart, then larger ones.
RESUME_FIRST_BATCH = 8
RESUME_BATCH = 200
RESUME_YIELD_EVERY = 10


class Resumes:
    def __init__(self, runs: LiveRuns) -> None:
        self.runs = runs

    async def all(self, records: list[ExecutionRecord]) -> None:
        """Resumes claimed executions (at start, adopted orphans) in batches: a small one
        first, so the first steps run again at once, then larger ones, each with one
        `restore_reads` (two queries on SQL) for all its executions; one that fails to resume
        is retried later."""
        todo = [r for r in sorted(records, key=lambda r: r.id) if r.id not in self.runs]
        size = RESUME_FIRST_BATCH
        while todo:
            batch, todo = todo[:size], todo[size:]
            size = RESUME_BATCH
            try:
                await self._batch(batch)
            except Exception:
                log.warning("could not resume %d executions; retrying", len(batch), exc_info=True)
                for record in batch:
                    if record.id not in self.runs:
                        self.runs.schedule_resume(record.id)

    async def _batch(self, records: list[ExecutionRecord]) -> None:
        admitted: list[tuple[ExecutionRecord, DagPlan]] = []
        for record in records:
            try:
                plan = await self._admitted_plan(record)
            except Exception:
                log.warning("could not resume execution %s; retrying", record.id, exc_info=True)
                self.runs.schedule_resume(record.id)
                continue
            if plan is not None:
                admitted.append((record, plan))
        restoring = [r.id for r, _ in admitted if r.state is not ExecutionState.PENDING]
        reads = await self.runs.engine.store.restore_reads(restoring) if restoring else {}
        launched = 0
        for record, plan in admitted:
            if record.id in self.runs:  # started meanwhile (admitted, a repeated start)
                continue
            run = DagRun(self.runs.engine, plan, record)
            if record.state is ExecutionState.PENDING:
                run.start_fresh()
            else:
                run.restore(*reads[record.id])
            self.runs.launch_or_park(run)
            launched += 1
            if launched % RESUME_YIELD_EVERY == 0:
                # Let the runs launched so far take their turns (and their calls start)
                # while the rest of the batch is rebuilt.
                await asyncio.sleep(0)

    async def one(self, record: ExecutionRecord) -> None:
        """Rebuilds a run from the store (a PENDING one starts) once admission lets it run."""
        plan = await self._admitted_plan(record)
        if plan is None:
            return
        run = DagRun(self.runs.engine, plan, record)
        if record.state is ExecutionState.PENDING:
            run.start_fresh()
        else:
            # Nodes and unconsumed signals in one read (one query on SQL), not two.
            read = await self.runs.engine.store.restore_read(record.id)
            nodes, signals = (read[1], read[2]) if read is not None else ([], [])
            run.restore(nodes, signals)
        self.runs.launch_or_park(run)

    async def _admitted_plan(self, record: ExecutionRecord) -> DagPlan | None:
        """The plan of an execution to resume, once admission lets it run (None: its
        workflow is gone, or it waits for a place)."""
        engine = self.runs.engine
        plan = await engine.plan_of(record)
        if plan is None:
            log.error(
                "execution %s: workflow %s v%s is gone", record.id, record.workflow, record.version
            )
            return None
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
            return None
        return plan
