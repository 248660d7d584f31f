"""The DAG runs live in this process (the engine's side of them): started, resumed from the
store after a restart, an adoption or a store failure, stopped when their lease is lost or the
engine drains, ended (waiters answered, the admission place given back), and waited for.

A run with nothing to do but wait (signal waits, wait timers, its deadline) leaves memory:
`idle` keeps only its id and when to load it again (a heap of wake-ups, one timer for the
earliest). A signal, a control request, a message, a waiter or the wake-up rebuilds it from
the store (`load`, the restore path). It keeps its lease (renewals go by owner) and its
admission place while unloaded (docs/durability.md, "Idle executions").

`Engine` keeps one `LiveRuns` and reaches its runs only through it and `DagRun`'s public
methods."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import TYPE_CHECKING

from agentrun.engine.dag.loop import DagRun
from agentrun.engine.dag.messages import Message
from agentrun.engine.dag.resume import Resumes
from agentrun.engine.dag.wakeups import Wakeups
from agentrun.engine.plan import DagPlan
from agentrun.storage.base import LeaseLost
from agentrun.storage.records import (
    Batch,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    SignalRecord,
)

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

log = logging.getLogger("agentrun.engine")

# A run whose next wake-up is closer than this stays in memory.
UNLOAD_MIN_SECONDS = 1.0


# How long a stop waits for the places of ended executions to be given back.
FREEING_SECONDS = 5.0


class LiveRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.live: dict[str, DagRun] = {}
        # Callers of `wait` for an execution that runs here, answered when it ends.
        self.waiters: dict[str, list[asyncio.Future[ExecutionRecord]]] = {}
        # Whether runs that only wait leave memory (EngineConfig.unload_idle).
        self.unload_idle = True
        # Unloaded runs owned here: id -> when to load it again (inf: on a signal only).
        self.idle: dict[str, float] = {}
        self._wakeups = Wakeups(engine.clock, self._wake)
        # Runs rebuilt from the store (a restart, adopted orphans, a store failure).
        self.resumes = Resumes(self)
        self._loading: dict[str, asyncio.Future[DagRun | None]] = {}
        # Places being given back (`_admission_freed`): `drain` waits for them, so none
        # outlives the engine (which runs hold weakly).
        self._freeing: set[asyncio.Task[None]] = set()

    def __contains__(self, execution_id: object) -> bool:
        """Runs here, loaded or not."""
        return execution_id in self.live or execution_id in self.idle

    def get(self, execution_id: str) -> DagRun | None:
        """The run if it is in memory (see `load` for one that may be unloaded)."""
        return self.live.get(execution_id)

    def post(self, execution_id: str, message: Message) -> bool:
        """Posts to the execution's run if it runs here and has not finished (an unloaded
        run is loaded first)."""
        run = self.live.get(execution_id)
        if run is None:
            if execution_id not in self.idle and execution_id not in self._loading:
                return False
            asyncio.get_running_loop().create_task(self._post_loaded(execution_id, message))
            return True
        if run.finished:
            return False
        run.post(message)
        return True

    async def _post_loaded(self, execution_id: str, message: Message) -> None:
        run = await self._load_quietly(execution_id)
        if run is not None and not run.finished:
            run.post(message)

    def signal_stored(self, signal: SignalRecord) -> bool:
        """A new signal for an execution that runs here, loaded or not: delivered (to a
        run being loaded too: its restore may have read the signals before this one was
        stored; a signal is applied once); False if it does not run here."""
        run = self.live.get(signal.execution_id)
        if run is not None:
            run.deliver_signal(signal, fresh=True)
            return True
        if signal.execution_id not in self:
            return False

        async def deliver() -> None:
            loaded = await self._load_quietly(signal.execution_id)
            if loaded is not None and not loaded.finished:
                loaded.deliver_signal(signal, fresh=True)

        asyncio.get_running_loop().create_task(deliver())
        return True

    # ------------------------------------------------------------ unloading
    def _unload(self, run: DagRun) -> bool:
        """`run` only waits: out of memory, if its wake-up is not too close (the loop
        returns)."""
        if not self.unload_idle or self.engine.draining or self.live.get(run.id) is not run:
            return False
        wake = run.idle_until()
        if wake is None or wake - self.engine.clock() < UNLOAD_MIN_SECONDS:
            return False
        del self.live[run.id]
        self._park(run.id, wake)
        return True

    def _park(self, execution_id: str, wake: float) -> None:
        self.idle[execution_id] = wake
        self._wakeups.add(execution_id, wake)

    def _wake(self, execution_id: str, wake: float) -> None:
        """An unloaded run's wake-up is due: loaded (its timers re-armed by restore)."""
        if self.idle.get(execution_id) == wake:  # else: loaded meanwhile, a stale entry
            asyncio.get_running_loop().create_task(self._load_quietly(execution_id))

    async def _load_quietly(self, execution_id: str) -> DagRun | None:
        """`load`, a failure (the store unavailable) retried by `schedule_resume`, which
        rebuilds the run with every stored signal."""
        try:
            return await self.load(execution_id)
        except Exception:
            log.warning("could not load execution %s; retrying", execution_id, exc_info=True)
            self.schedule_resume(execution_id)
            return None

    async def load(self, execution_id: str) -> DagRun | None:
        """The execution's run, rebuilt from the store if it was unloaded; None if it does
        not run here (or ended, or its lease went elsewhere meanwhile)."""
        while True:
            run = self.live.get(execution_id)
            if run is not None or self.engine.draining:
                return run
            loading = self._loading.get(execution_id)
            if loading is None:
                break
            # Another caller loads it; by the time this one resumes the run may have taken a
            # turn and left memory again: look again.
            await asyncio.shield(loading)
        if execution_id not in self.idle:
            return None
        fut: asyncio.Future[DagRun | None] = asyncio.get_running_loop().create_future()
        self._loading[execution_id] = fut
        try:
            run = await self._reload(execution_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a failed load is reported to its first caller
            raise
        else:
            fut.set_result(run)
            return run
        finally:
            del self._loading[execution_id]

    async def _reload(self, execution_id: str) -> DagRun | None:
        engine = self.engine
        # Record, nodes and signals in one read (a signal waits for it): one query on SQL.
        read = await engine.store.restore_read(execution_id)
        record, nodes, signals = read if read is not None else (None, [], [])
        if record is None or record.state.terminal or record.owner != engine.replica_id:
            self.idle.pop(execution_id, None)
            if self.waiters.get(execution_id):
                asyncio.get_running_loop().create_task(self._hand_over_waiters(execution_id))
            return None
        plan = await engine.plan_of(record)
        if plan is None:
            self.idle.pop(execution_id, None)
            log.error(
                "execution %s: workflow %s v%s is gone", record.id, record.workflow, record.version
            )
            return None
        if execution_id not in self.idle:  # stopped meanwhile (a lost lease, a drain)
            return self.live.get(execution_id)
        run = DagRun(engine, plan, record)
        run.restore(nodes, signals)
        del self.idle[execution_id]
        self._launch(run, reloaded=True)
        return run

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
        if run.finished:  # decided in its first turn (inline nodes only): no loop to run
            if self.engine.instrumentation is not None:
                self.engine.instrumentation.execution_started(run.record)
            run.end_first()
            self._ended(run)
            return
        if self._park_quiet(run):  # it only waits: no task, no loop (issue 18's start rate)
            run.publish_first()
            return
        self._launch(run)

    def start_rerun(self, plan: DagPlan, record: ExecutionRecord, reused: list[NodeRecord]) -> None:
        """A rerun: its reused nodes SUCCEEDED already, the rest run."""
        run = DagRun(self.engine, plan, record)
        run.restore(reused, [], fresh=True)
        self._launch(run)

    def launch_or_park(self, run: DagRun) -> None:
        """A rebuilt run that only waits goes straight to `idle`, without a task or a first
        turn; any other is launched."""
        if not self._park_quiet(run):
            self._launch(run)

    def _park_quiet(self, run: DagRun) -> bool:
        """Parks a run not launched yet that has nothing to write, no timer to arm and
        nothing to do but wait (`idle_until`, its wake-up far enough); True if it did."""
        fold = run.fold
        batch = fold.journal.batch
        if (
            fold.journal.dirty
            or batch.events
            or batch.execution is not None
            or batch.consumed_signals
            or not self.unload_idle
            or self.engine.draining
        ):
            return False
        wake = run.idle_until()
        if wake is None or wake - self.engine.clock() < UNLOAD_MIN_SECONDS:
            return False
        if self.engine.instrumentation is not None:
            self.engine.instrumentation.execution_started(run.record)
        self._park(run.id, wake)
        fold.close()
        return True

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
        run = await self.load(execution_id)
        if run is None or run.finished:
            return
        for signal in await self.engine.store.pending_signals(execution_id):
            run.deliver_signal(signal)

    def _launch(self, run: DagRun, *, reloaded: bool = False) -> None:
        engine = self.engine
        self.live[run.id] = run
        run.on_idle = self._unload
        if engine.instrumentation is not None and not reloaded:
            engine.instrumentation.execution_started(run.record)
        task = asyncio.get_running_loop().create_task(run.loop(), name=f"execution {run.id}")
        run.task = task
        task.add_done_callback(lambda _task: self._ended(run))

    # ------------------------------------------------------------ stopping
    def _ended(self, run: DagRun) -> None:
        if run.unloaded:
            return  # out of memory, waiting (`idle`); nothing ended
        engine = self.engine
        # Asked only where needed: `asyncio.get_running_loop()` is a getpid() system call on
        # CPython 3.11, and most runs end with none of the work below.
        if self.live.get(run.id) is run:
            del self.live[run.id]
        if run.finished or (run.task is not None and run.task.cancelled() and not engine.draining):
            # Decided at once when the admission needs no store (no task per ended run).
            admitted = engine.admission.finished_now(run.id, ended=run.finished)
            if admitted != []:
                freeing = asyncio.get_running_loop().create_task(
                    self._admission_freed(run.id, ended=run.finished, admitted=admitted)
                )
                self._freeing.add(freeing)
                freeing.add_done_callback(self._freeing.discard)
        task = run.task
        if run.lease_lost or (
            task is not None and not task.cancelled() and isinstance(task.exception(), LeaseLost)
        ):
            log.warning("execution %s: lease lost to another replica; stopped here", run.id)
            if self.waiters.get(run.id):
                asyncio.get_running_loop().create_task(self._hand_over_waiters(run.id))
            return
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("execution %s stopped: %r", run.id, task.exception())
            if not engine.draining:
                # The store holds the truth: rebuild from it after a pause (e.g. the database
                # was briefly unavailable).
                asyncio.get_running_loop().call_later(1.0, self.schedule_resume, run.id)
            return
        if run.finished:
            # The run's own record: nothing changes it once the run ended (a copy only to
            # redact, the run holding the real values).
            record = run.record
            if engine.redactor:
                record = copy.copy(record)
                record.output = engine.redactor.value(record.output)
                record.error = engine.redactor.value(record.error)
                record.vars = engine.redactor.value(record.vars)
            if engine.instrumentation is not None:
                engine.instrumentation.execution_ended(record)
            self.answer_waiters(run.id, record)

    async def _admission_freed(
        self, execution_id: str, *, ended: bool, admitted: list[str] | None = None
    ) -> None:
        """A run stopped: the executions its place admits start (here, or on the replica
        holding them, told through the notification channel); `admitted`: already known
        (`finished_now`)."""
        if admitted is None:
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

    def schedule_resume(self, execution_id: str, delay: float = 1.0) -> None:
        """Rebuilds a run that stopped on a store failure, retrying (with backoff) until the
        store answers again; a lease taken meanwhile by another replica ends the attempts."""
        engine = self.engine

        async def resume() -> None:
            if engine.draining or execution_id in self.live:
                return
            self.idle.pop(execution_id, None)
            try:
                record = await engine.store.get_execution(execution_id)
                if record is None or record.state.terminal or record.owner != engine.replica_id:
                    return
                await self.resumes.one(record)
            except Exception:
                log.warning(
                    "resuming %s failed; retrying in %.1fs", execution_id, delay, exc_info=True
                )
                asyncio.get_running_loop().call_later(
                    delay, self.schedule_resume, execution_id, min(delay * 2, 10.0)
                )

        asyncio.get_running_loop().create_task(resume())

    def stop_lost(self, before: set[str], owned: set[str]) -> None:
        """A lease renewal answered `owned`: a run that existed before it was read (`before`)
        and is not owned any more stops at once (its commits would be refused anyway); an
        unloaded one is forgotten."""
        for execution_id in [i for i in self.idle if i in before and i not in owned]:
            log.warning("lease on execution %s was lost; forgetting it here", execution_id)
            del self.idle[execution_id]
            if self.waiters.get(execution_id):
                asyncio.get_running_loop().create_task(self._hand_over_waiters(execution_id))
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
        detached.extend(self.idle)
        self.idle.clear()
        self._wakeups.clear()
        tasks = [run.task for run in self.live.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._freeing:
            # Bounded: a store that does not answer must not hold the stop (the places of
            # executions that ended are reaped from the store later).
            await asyncio.wait(set(self._freeing), timeout=FREEING_SECONDS)
        return detached

    # ------------------------------------------------------------ waiting
    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord | None:
        """The execution's final record once its run here ends; None if it does not run here."""
        if execution_id not in self:
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
