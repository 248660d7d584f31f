"""One DAG execution live in this process: the loop around its fold (LangGraph's `_loop`).

Each turn drains every message that arrived into the fold, lets it start what became ready
(inline nodes compute within the turn), performs the effects it asked for (timers, cancels,
scheduler slots), commits the turn's writes as one batch, publishes them, and only then
answers control requests and launches the calls. So a node's completion is durable before
any successor starts, and many completions share one commit.

The engine talks to a run through its public methods (`start_fresh`, `restore`, `loop`,
`post`, `control`, `deliver_signal`); the run reaches the engine only through `Host`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agentrun.engine.breakers import Breakers
from agentrun.engine.budgets import Budgets
from agentrun.engine.dag.calls import attempt_now, run_call
from agentrun.engine.dag.fold import Fold
from agentrun.engine.dag.gate import Gating
from agentrun.engine.dag.keys import TaskKey
from agentrun.engine.dag.messages import (
    Ack,
    ArmTimer,
    Call,
    Cancel,
    CancelCall,
    CancelTimer,
    DeadlineReached,
    Done,
    Effect,
    Emitted,
    Granted,
    Message,
    Pause,
    ReleaseSlot,
    RequestSlot,
    Resume,
    SignalArrived,
    SignalOffered,
)
from agentrun.engine.dag.restore import restore
from agentrun.engine.errors import Unavailable
from agentrun.engine.hub import Hub
from agentrun.engine.instrument import Instrumentation
from agentrun.engine.plan import AgentStep, DagPlan, ToolStep, WorkflowStep
from agentrun.engine.redact import Redactor
from agentrun.engine.runtime.redaction import redacted_batch
from agentrun.engine.scheduler import BaseScheduler, Ticket
from agentrun.storage.base import Store
from agentrun.storage.records import (
    Batch,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)

# Turns a run takes in a row without waiting before it lets the loop's other tasks run.
_BUSY_TURNS = 16


class Host(Protocol):
    """What a run needs from the engine that runs it (`Engine` is one); read-only, so any
    scheduler or store implementation will do."""

    @property
    def store(self) -> Store: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def scheduler(self) -> BaseScheduler: ...
    @property
    def budgets(self) -> Budgets: ...
    @property
    def breakers(self) -> Breakers: ...
    @property
    def redactor(self) -> Redactor: ...
    @property
    def instrumentation(self) -> Instrumentation | None: ...
    @property
    def secrets(self) -> Mapping[str, str]: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def draining(self) -> bool: ...

    def clock(self) -> float: ...

    async def run_child(
        self, *, parent_id: str, tenant: str, key: str, attempt: int, step: WorkflowStep, input: Any
    ) -> Any: ...


class DagRun:
    def __init__(self, host: Host, plan: DagPlan, record: ExecutionRecord) -> None:
        self.host = host
        self.id = record.id
        scheduler, budgets = host.scheduler, host.budgets
        self.fold = Fold(
            plan,
            record,
            clock=host.clock,
            rng=host.rng,
            secrets=host.secrets,
            gating=Gating(
                scheduler.active,
                scheduler.config.bindings,
                lambda step: (
                    isinstance(step, AgentStep) and budgets.covers(record.tenant, plan.budget, step)
                ),
            ),
        )
        self.fold.run_inline = self._inline
        self.inbox: deque[Message] = deque()
        self.wakeup = asyncio.Event()
        # Running calls by their keys' text (as `Fold.calls`).
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.timers: dict[TaskKey, asyncio.TimerHandle] = {}
        # The task running `loop`, set by the engine; `lease_lost`: stopped because another
        # replica took the execution over.
        self.task: asyncio.Task[None] | None = None
        self.lease_lost = False
        # Set by the engine: called when the run has nothing to do but wait (`idle_until`);
        # True takes it out of memory (the loop returns, `unloaded` set), to be rebuilt
        # from the store when a signal, control request or timer needs it.
        self.on_idle: Callable[[DagRun], bool] | None = None
        self.unloaded = False
        self._deadline: asyncio.TimerHandle | None = None
        self._acks: list[asyncio.Future[None]] = []
        # The first turn's batch when it was committed with the execution's creation
        # (`first_turn`), with how long that commit took: the loop publishes it and starts
        # its calls instead of taking the turn again.
        self._first: tuple[Batch, float] | None = None
        # A store that can write a turn at once (memory always, SQLite often): tried before
        # its `commit` coroutine.
        self._at_once: Callable[[Batch], bool] | None = host.store.commit_at_once
        # The host's parts a step reads, read once: the host is the engine's weak proxy,
        # where each attribute read costs a lookup through the proxy.
        self.hub, self.redactor = host.hub, host.redactor
        self.instrumentation, self.secrets, self.breakers = (
            host.instrumentation,
            host.secrets,
            host.breakers,
        )

    @property
    def record(self) -> ExecutionRecord:
        return self.fold.record

    @property
    def plan(self) -> DagPlan:
        return self.fold.plan

    @property
    def finished(self) -> bool:
        return self.fold.finished

    @property
    def paused(self) -> bool:
        return self.fold.paused

    @property
    def paused_on(self) -> set[str]:
        """The nodes (`on_exhausted: pause`) the execution is paused on."""
        return self.fold.handlers.paused_on

    @property
    def busy(self) -> bool:
        """Calls are running."""
        return bool(self.tasks)

    def idle_until(self) -> float | None:
        """When this run needs to be in memory again, if nothing but waits is left: the
        earliest of its wait timers and its deadline (`inf`: only a signal or a control
        request wakes it); None while anything runs, is queued, retries, escalates, is paused
        or compensates, or a map item or handler is under way."""
        fold = self.fold
        if (
            self.tasks
            or self._acks
            or self.inbox
            or fold.finished
            or fold.paused
            or fold.record.state is not ExecutionState.WAITING
            or fold.calls
            or fold.to_launch
            or fold.inline
            or fold.effects
            or fold.items
            or fold.retrying
            or fold.graph.ready
            or fold.gate.gated
            or fold.gate.slots
            or fold.maps.busy
            or fold.saga.active
            or fold.handlers.escalated
        ):
            return None
        wake = fold.record.deadline if fold.record.deadline is not None else math.inf
        for key in fold.timers:
            rec = fold.records.get(key.node) if key.is_node else None
            if rec is None or rec.state is not NodeState.WAITING or rec.wake_at is None:
                return None
            wake = min(wake, rec.wake_at)
        return wake

    # ------------------------------------------------------------ the engine's side
    def start_fresh(self) -> None:
        """A new execution: RUNNING (unless created paused), its roots resolved."""
        self.fold.start_fresh()

    def first_turn(self) -> Batch:
        """A new execution's first turn, taken before it is stored: RUNNING, its roots
        resolved, inline nodes computed. The caller writes the batch (redacted) with the
        execution's creation, in one commit, then hands it to `committed_first` and launches
        the loop, which performs the turn's effects and starts its calls. Nothing of the turn
        left the run yet, so a refused creation (a repeated request id) just drops the run."""
        fold = self.fold
        fold.start_fresh()
        fold.draining = self.host.draining
        inline = fold.run_inline
        if self.host.instrumentation is not None:
            # A call's span nests under its execution's, which starts once the execution is
            # stored: no call runs before, a pure one neither (it is launched after the commit).
            fold.run_inline = None
        try:
            fold.turn()
        finally:
            fold.run_inline = inline
        batch = fold.journal.take()
        assert batch is not None  # start_fresh always changes the execution
        host = self.host
        return redacted_batch(batch, host.redactor) if host.redactor else batch

    def committed_first(self, batch: Batch, seconds: float) -> None:
        """The first turn's batch is stored (with the creation, in `seconds`)."""
        self._first = (batch, seconds)

    def end_first(self) -> None:
        """A run that its first turn finished (every node inline) ends without a loop: that
        turn's effects performed, its stored batch published, its fold closed."""
        fold = self.fold
        assert fold.finished
        if fold.effects:
            self._perform(fold.take_effects())
        self.publish_first()
        fold.close()

    def publish_first(self) -> None:
        """A run that will not loop (it only waits: the engine keeps it out of memory from
        its start) reports and publishes its stored first turn here instead."""
        if self._first is not None:
            self._committed(*self._first)
            self._first = None

    def restore(
        self, nodes: list[NodeRecord], signals: list[SignalRecord], *, fresh: bool = False
    ) -> None:
        """Rebuilds the run from stored records after a restart; `fresh` starts a rerun whose
        reused nodes are already SUCCEEDED."""
        restore(self.fold, nodes, signals, fresh=fresh)

    def post(self, message: Message) -> None:
        self.inbox.append(message)
        self.wakeup.set()

    def emit(self, key: TaskKey, type_: str, data: Any) -> None:
        """A running call's event; an `agent.usage` report is metered against the call's
        budget claim first (its cost from the price table)."""
        if type_ == "agent.usage" and isinstance(data, dict):
            data = self.host.budgets.meter((self.id, key.text), data)
        self.post(Emitted(key, type_, data))

    def deliver_signal(self, signal: SignalRecord, *, fresh: bool = False) -> None:
        """`fresh`: stored just now by this process (see SignalArrived)."""
        self.post(SignalArrived(signal, fresh))

    def offer_signal(self, signal: SignalRecord) -> asyncio.Future[None]:
        """A signal not stored yet, for the run's next turn to store with what it does
        (`SignalOffered`); the future resolves after that turn's commit (the signal's
        `consumed_by` None: declined), or fails if the run stops first."""
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.post(SignalOffered(signal, ack))
        return ack

    def control(
        self, action: str, *, compensate: bool = False, override: dict[str, Any] | None = None
    ) -> asyncio.Future[None]:
        """Pause, resume (`override`: new args for the node it is paused on) or cancel; the
        future resolves once the effect is committed."""
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if action == "pause":
            self.post(Pause(ack))
        elif action == "resume":
            self.post(Resume(ack, override))
        elif action == "cancel":
            self.post(Cancel(ack, compensate))
        else:
            raise ValueError(f"unknown control action {action!r}")
        return ack

    # -------------------------------------------------------------- the loop
    async def loop(self) -> None:
        fold = self.fold
        inbox = self.inbox
        try:
            self._arm_deadline()
            first, self._first = self._first, None
            busy = 0  # turns in a row that did not wait for a message
            # Read again after every wait: nothing awaits between a drain and its turn.
            fold.draining = self.host.draining
            while True:
                if first is None:
                    fold.turn()
                    batch = self._batch()
                    if batch is not None and not self._written_at_once(batch):
                        await self._commit(batch)
                    self._answer_and_launch()
                else:  # the first turn, committed with the creation
                    if fold.effects:
                        self._perform(fold.take_effects())
                    self._committed(*first)
                    self._answer_and_launch()
                    first = None
                if fold.finished:
                    return
                if not inbox and self.on_idle is not None and self.on_idle(self):
                    self.unloaded = True
                    return
                if not inbox:
                    await self.wakeup.wait()
                    busy = 0
                else:
                    # Synchronous calls answer at once and a memory commit does not wait:
                    # give the other tasks of the loop a turn now and then.
                    busy += 1
                    if busy == _BUSY_TURNS:
                        busy = 0
                        await asyncio.sleep(0)
                self.wakeup.clear()
                fold.draining = self.host.draining
                while inbox:
                    msg = inbox.popleft()
                    if type(msg) is Done:
                        self.tasks.pop(msg.key.text, None)
                    fold.apply(msg)
                    if fold.effects:
                        # At once: a slot granted now is taken in this same drain.
                        self._perform(fold.take_effects())
        except BaseException:
            # Stopped (shutdown, lease lost, store failure): hand everything back as it is.
            fold.cancel_all(detach=True)
            self._perform(fold.take_effects())
            for task in self.tasks.values():
                task.cancel()
            self.tasks.clear()
            raise
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            for handle in self.timers.values():
                handle.cancel()
            self._fail_acks()
            fold.close()

    def _fail_acks(self) -> None:
        """The loop stopped: control requests and offered signals it did not commit (taken
        in a turn whose commit failed, or still in the inbox) fail, their callers not left
        waiting."""
        acks, self._acks = self._acks, []
        acks += [
            msg.ack
            for msg in self.inbox
            if isinstance(msg, SignalOffered | Pause | Resume | Cancel) and msg.ack is not None
        ]
        for fut in acks:
            if not fut.done():
                fut.set_exception(Unavailable(f"execution {self.id} stopped here"))
                fut.exception()  # retrieved: its caller may have gone

    def _arm_deadline(self) -> None:
        deadline = self.fold.record.deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.host.clock())
            self._deadline = asyncio.get_running_loop().call_later(
                delay, self.post, DeadlineReached()
            )

    def _written_at_once(self, batch: Batch) -> bool:
        """Whether the store wrote the turn's batch at once (`Store.commit_at_once`: no
        coroutine; every turn in memory, most on SQLite), then published it; False: nothing
        written."""
        at_once = self._at_once
        if at_once is None:
            return False
        if self.instrumentation is None:
            if not at_once(batch):
                return False
            self.hub.publish(self.id, batch.events)
            return True
        started = time.perf_counter()
        if not at_once(batch):
            return False
        self._committed(batch, time.perf_counter() - started)
        return True

    async def _commit(self, batch: Batch) -> None:
        """Commits the turn's writes (the store's coroutine), then publishes them."""
        started = time.perf_counter()
        await self.host.store.commit(batch)
        self._committed(batch, time.perf_counter() - started)

    def _batch(self) -> Batch | None:
        """The turn's writes to commit (its effects performed first), redacted if needed."""
        fold, redactor = self.fold, self.redactor
        if fold.effects:
            self._perform(fold.take_effects())
        batch = fold.journal.take()
        if batch is not None and redactor:
            batch = redacted_batch(batch, redactor)
        return batch

    def _committed(self, batch: Batch, seconds: float) -> None:
        """Reports a stored batch and publishes its events."""
        host = self.host
        instr = host.instrumentation
        if instr is not None:
            instr.events_committed(self.fold.record, batch.events, seconds)
        host.hub.publish(self.id, batch.events)

    def _answer_and_launch(self) -> None:
        """After a commit: control requests answered, the turn's calls started."""
        fold = self.fold
        if self._acks:
            acks, self._acks = self._acks, []
            for fut in acks:
                if not fut.done():
                    fut.set_result(None)
        if fold.to_launch:
            for call in fold.take_launches():
                step = call.step
                if type(step) is ToolStep and step.tool is not None and step.tool.synchronous:
                    # At once, to its end (no task, no trip through the event loop): its
                    # `Done` is in the inbox, which the loop drains before it waits.
                    self.inbox.append(Done(call.key, call.attempt, *attempt_now(self, call)))
                else:
                    self.tasks[call.key.text] = asyncio.get_running_loop().create_task(
                        run_call(self, call)
                    )

    def _inline(self, call: Call) -> tuple[bool, Any]:
        """A pure synchronous tool's attempt, run inside the fold's turn (`Fold.run_inline`).
        What it posted while it ran (its events, a breaker's change) is applied before its
        outcome, as the loop would have."""
        inbox = self.inbox
        before = len(inbox)
        outcome = attempt_now(self, call)
        if len(inbox) > before:
            posted = [inbox.pop() for _ in range(len(inbox) - before)]
            for msg in reversed(posted):
                self.fold.apply(msg)
        return outcome

    # ------------------------------------------------------------- effects
    def _perform(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case ArmTimer(key, delay, fire):
                    old = self.timers.pop(key, None)
                    if old is not None:
                        old.cancel()
                    self.timers[key] = asyncio.get_running_loop().call_later(
                        max(0.0, delay), self._fire, key, fire
                    )
                case CancelTimer(key):
                    handle = self.timers.pop(key, None)
                    if handle is not None:
                        handle.cancel()
                case CancelCall(key):
                    task = self.tasks.pop(key.text, None)
                    if task is not None:
                        task.cancel()
                case RequestSlot():
                    self._request_slot(effect)
                case ReleaseSlot(key):
                    self.host.scheduler.release((self.id, key.text))
                case Ack(token):
                    self._acks.append(token)

    def _fire(self, key: TaskKey, message: Message) -> None:
        self.timers.pop(key, None)
        self.post(message)

    def _request_slot(self, request: RequestSlot) -> None:
        scheduler = self.host.scheduler
        record = self.fold.record
        key = request.key
        owner = (self.id, key.text)
        claim = None
        if request.budgeted is not None:
            claim = self.host.budgets.claim(owner, record.tenant, record.workflow, request.budgeted)

        def grant(ticket: Ticket) -> None:
            self.post(Granted(key, scheduler.queued_seconds(ticket), ticket.throttled))

        scheduler.request(
            owner,
            tenant=record.tenant,
            workflow=record.workflow,
            execution_priority=record.priority,
            node_priority=request.node_priority,
            bucket=request.bucket,
            grant=grant,
            target=request.target,
            claim=claim,
        )
