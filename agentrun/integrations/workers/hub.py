"""The workers' side: the sessions of the workers connected to this replica.

A session is one worker's stream. The dispatcher leases READY calls to sessions with free
slots (per worker and per tool, never more than advertised) and queues them on the
session's outbox, which the servicer sends. A result is written only under the session's
live lease (`complete`, the fence); a refused one is answered `refused`. Heartbeats extend
the leases; a session silent for a lease loses its calls (they fail `worker_lost`) and gets
none until it speaks again; a session that ends loses them at once. A call stays counted
against its worker's slots until the worker answers it, also after it was withdrawn, so a
worker never runs more calls than its slots, even one resumed after a long stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentrun.engine.errors import Diagnostic, InvalidArgument
from agentrun.integrations.workers.bell import Bell
from agentrun.integrations.workers.calls import lost_error
from agentrun.integrations.workers.catalog import Catalog, Registration, check_registration
from agentrun.integrations.workers.settings import WorkersConfig
from agentrun.storage.worker_calls import (
    CallRecord,
    CallState,
    Claim,
    ToolDeclaration,
    ToolTaken,
    WorkerCallStore,
    WorkerRecord,
)

log = logging.getLogger("agentrun.integrations.workers")

SERVING, DRAINING, UNRESPONSIVE = "SERVING", "DRAINING", "UNRESPONSIVE"


@dataclass(frozen=True, slots=True)
class Cancel:
    """Tell the worker a call it holds is withdrawn."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Tell the worker its answer was not applied."""

    call_id: str
    reason: str


Outgoing = CallRecord | Cancel | Refused


@dataclass(eq=False)
class Session:
    id: str
    tenant: str
    registration: Registration
    connected_at: float
    heartbeat_at: float
    state: str = SERVING
    # Calls sent and not answered yet: id -> tool (they hold a slot).
    inflight: dict[str, str] = field(default_factory=dict)
    # The replica waiting for each of them.
    callers: dict[str, str] = field(default_factory=dict)
    outbox: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)
    # Calls the worker was told are withdrawn (told once).
    withdrawn: set[str] = field(default_factory=set)
    closed: bool = False

    @property
    def name(self) -> str:
        return f"workers/{self.id}"

    def claim(self, fresh_after: float) -> Claim | None:
        """What the worker can take now, or None: nothing unless it is serving and sent a
        heartbeat after `fresh_after` (a worker that went quiet is not sent more calls while
        its lease runs out)."""
        if self.closed or self.state != SERVING or self.heartbeat_at < fresh_after:
            return None
        total = self.registration.max_concurrent_calls - len(self.inflight)
        if total <= 0:
            return None
        held: dict[str, int] = {}
        for name in self.inflight.values():
            held[name] = held.get(name, 0) + 1
        free = {}
        for tool in self.registration.tools:
            limit = tool.max_concurrent_calls or self.registration.max_concurrent_calls
            if limit - held.get(tool.name, 0) > 0:
                free[tool.name] = min(total, limit - held.get(tool.name, 0))
        if not free:
            return None
        return Claim(
            worker_id=self.id,
            tenant=self.tenant,
            labels=self.registration.labels,
            free=free,
            total=total,
        )

    def withdraw(self, call_id: str, reason: str) -> None:
        """Tells the worker (once) that a call it holds is no longer wanted; the call keeps
        its slot until the worker answers it."""
        if call_id in self.inflight and call_id not in self.withdrawn and not self.closed:
            self.withdrawn.add(call_id)
            self.outbox.put_nowait(Cancel(call_id, reason))

    async def next(self) -> Outgoing | None:
        """The next message to send; None when the session is over."""
        return await self.outbox.get()


class WorkerHub:
    def __init__(
        self,
        repo: WorkerCallStore,
        bell: Bell,
        catalog: Catalog,
        config: WorkersConfig,
        replica: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repo = repo
        self._bell = bell
        self._catalog = catalog
        self._config = config
        self.replica = replica
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._turn = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[Any]] = set()
        self.draining = False
        bell.listen(self._heard)

    # Lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dispatch_loop(), name="agentrun-workers-dispatch"),
            loop.create_task(self._liveness_loop(), name="agentrun-workers-liveness"),
        ]

    def drain(self) -> None:
        """No more calls to any session; those in flight may still be answered."""
        self.draining = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for session in list(self._sessions.values()):
            await self.close(session)
        others = self._closing - {asyncio.current_task()}
        if others:  # sessions whose streams ended just before
            await asyncio.gather(*others, return_exceptions=True)

    def _heard(self, kind: str, key: str) -> None:
        if kind == "wcall":
            self._wake.set()
        elif kind == "wdone":
            for session in self._sessions.values():
                if key in session.inflight:
                    asyncio.get_running_loop().create_task(self._maybe_withdrawn(session, key))

    async def _maybe_withdrawn(self, session: Session, call_id: str) -> None:
        """A call the session holds ended elsewhere (cancelled, lease expired): tell the worker."""
        with contextlib.suppress(Exception):
            (call,) = await self._repo.get_calls([call_id]) or (None,)
            if call is not None and call.state.finished:
                session.withdraw(
                    call_id, "lease_lost" if call.state is CallState.FAILED else "cancelled"
                )

    # Sessions -------------------------------------------------------------------------------
    async def open(self, tenant: str, registration: Registration) -> Session:
        """Registers a worker: InvalidArgument naming the field for a bad registration."""
        problems = check_registration(registration, self._catalog)
        if problems:
            raise InvalidArgument(problems)
        now = self.clock()
        declarations = [
            ToolDeclaration(t.name, tenant, t.definition(), now) for t in registration.tools
        ]
        try:
            await self._repo.declare_tools(tenant, declarations)
        except ToolTaken as taken:
            index = next(i for i, t in enumerate(registration.tools) if t.name == taken.name)
            raise InvalidArgument(
                [Diagnostic(f"register.tools[{index}].name", str(taken))]
            ) from None
        for declaration in declarations:
            self._catalog.install(declaration.name, declaration.definition)
        session = Session(uuid.uuid4().hex, tenant, registration, now, now)
        await self._repo.add_worker(
            WorkerRecord(
                id=session.id,
                tenant=tenant,
                display_name=registration.display_name,
                replica=self.replica,
                labels=dict(registration.labels),
                version=registration.version,
                tools=[{"name": t.name, **t.definition()} for t in registration.tools],
                slots=registration.max_concurrent_calls,
                connected_at=now,
                heartbeat_at=now,
            )
        )
        self._sessions[session.id] = session
        self._bell.ring("wtools", tenant)
        self._wake.set()
        log.info(
            "worker %s connected (%s), serving %s",
            session.id,
            registration.display_name or "unnamed",
            ", ".join(t.name for t in registration.tools),
        )
        return session

    async def close(self, session: Session) -> None:
        """The stream ended: the calls the worker holds are lost (another attempt may run)."""
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        task = asyncio.current_task()
        if task is not None:  # `stop` waits for it: the store must outlive the release
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        session.outbox.put_nowait(None)
        try:
            lost = await self._repo.release(
                session.id,
                now=self.clock(),
                error=lost_error("the worker disconnected before it answered"),
            )
            for call in lost:
                self._bell.ring("wdone", call.id)
            await self._repo.remove_worker(session.id)
        except Exception as exc:  # the leases expire on their own; the sweep removes the row
            log.warning("worker %s: could not release its calls: %r", session.id, exc)
        log.info("worker %s disconnected", session.id)

    async def result(
        self,
        session: Session,
        call_id: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Applies an answer under the session's lease; False (and the worker told) if refused."""
        known = session.inflight.pop(call_id, None) is not None
        caller = session.callers.pop(call_id, None)
        session.withdrawn.discard(call_id)
        self._wake.set()  # a slot is free
        applied = known and await self._repo.complete(
            call_id, session.id, now=self.clock(), result=result, error=error
        )
        if applied:
            # The other replicas hear of it only when one of them waits for it.
            self._bell.ring("wdone", call_id, remote=caller != self.replica)
        else:
            session.outbox.put_nowait(Refused(call_id, "lease_lost" if known else "unknown_call"))
        return applied

    async def heartbeat(self, session: Session) -> None:
        now = self.clock()
        if session.heartbeat_at < now - 2 * self._config.heartbeat:
            self._wake.set()  # it was too quiet to be sent calls; now it may take some
        session.heartbeat_at = now
        if session.state == UNRESPONSIVE:
            session.state = SERVING
            self._wake.set()
        held = await self._repo.renew(session.id, now=now, lease_until=now + self._config.lease)
        for call_id in [c for c in session.inflight if c not in held]:
            session.withdraw(call_id, "lease_lost")
        await self._repo.update_worker(session.id, heartbeat_at=now, state=session.state)

    async def progress(self, session: Session, call_id: str, progress: dict[str, Any]) -> None:
        if call_id in session.inflight:
            await self._repo.report_progress(call_id, session.id, progress)

    async def stop_sending(self, session: Session) -> None:
        """The worker drains: no more calls to it."""
        session.state = DRAINING
        await self._repo.update_worker(session.id, state=DRAINING)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    # Loops ----------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._config.poll)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.draining or not self._sessions:
                continue
            try:
                await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker dispatch: %r", exc)

    async def _dispatch(self) -> None:
        """Leases calls to every session with free slots, in turns (so that workers serving
        the same tool share its calls), until none takes any more."""
        while not self.draining:
            sessions = list(self._sessions.values())
            if not sessions:
                return
            start = next(self._turn) % len(sessions)
            now = self.clock()
            fresh_after = now - 2 * self._config.heartbeat
            claims = [
                (s, c)
                for s in sessions[start:] + sessions[:start]
                if (c := s.claim(fresh_after)) is not None
            ]
            if not claims:
                return
            # Concurrent claims share one transaction (the group commit), in turn order.
            leased = await asyncio.gather(
                *(
                    self._repo.claim(c, now=now, lease_until=now + self._config.lease)
                    for _, c in claims
                )
            )
            took = False
            for (session, _), calls in zip(claims, leased, strict=True):
                if session.closed:  # it ended while we claimed: the calls are lost
                    await self._repo.release(
                        session.id, now=now, error=lost_error("the worker disconnected")
                    )
                    for call in calls:
                        self._bell.ring("wdone", call.id)
                    continue
                for call in calls:
                    session.inflight[call.id] = call.tool
                    session.callers[call.id] = call.caller
                    session.outbox.put_nowait(call)
                took = took or bool(calls)
            if not took:
                return

    async def _liveness_loop(self) -> None:
        """Sessions silent for a lease lose their calls and take none until they speak."""
        interval = min(self._config.heartbeat, self._config.poll)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for session in list(self._sessions.values()):
                if (
                    session.state == UNRESPONSIVE
                    or session.heartbeat_at >= now - self._config.lease
                ):
                    continue
                session.state = UNRESPONSIVE
                try:
                    lost = await self._repo.release(
                        session.id,
                        now=now,
                        error=lost_error(
                            f"the worker sent no heartbeat for {self._config.lease:g}s"
                        ),
                    )
                    for call in lost:
                        self._bell.ring("wdone", call.id)
                        session.withdraw(call.id, "lease_lost")
                    await self._repo.update_worker(session.id, state=UNRESPONSIVE)
                    log.warning(
                        "worker %s missed its heartbeats: %d calls taken back",
                        session.id,
                        len(lost),
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("worker %s: could not take its calls back: %r", session.id, exc)
