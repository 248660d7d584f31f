"""The caller's side of remote tool calls: a node's attempt becomes a READY row and waits for
its outcome.

`RemoteCalls.call` stores the call and waits; one loop per replica reads the rows of the
calls it waits for when told one ended (`wdone`) or at the poll interval, ends the leases
that expired (the worker's replica may be gone too), turns progress into `tool.progress`
events, keeps its calls alive (`keep_callers`, every lease/3 while it waits for any, whatever
the poll interval) and sweeps. A call the attempt no longer
waits for (its timeout fired, the execution was cancelled or handed over) is cancelled, and
the worker holding it is told. The outcome is the worker's answer, or `worker_lost`: the
retry decision is the step invoker's, as for any tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentrun.engine.instrument import current_traceparent
from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.integrations.workers.bell import Bell
from agentrun.integrations.workers.settings import WorkersConfig
from agentrun.storage.base import StoreError
from agentrun.storage.worker_calls import CallRecord, CallState, WorkerCallStore

if TYPE_CHECKING:
    from agentrun.integrations.workers.catalog import RemoteTool

log = logging.getLogger("agentrun.integrations.workers")

# How often the store is swept of ended calls, silent workers and calls nobody waits for.
SWEEP_SECONDS = 30.0


def lost_error(message: str) -> dict[str, Any]:
    return {"type": "worker_lost", "message": message, "details": {}}


@dataclass(slots=True, eq=False)
class _Waiting:
    future: asyncio.Future[CallRecord]
    ctx: CallContext
    tool: str
    progress: dict[str, Any] | None = None
    seen: set[str] = field(default_factory=set)


class RemoteCalls:
    def __init__(
        self,
        repo: WorkerCallStore,
        bell: Bell,
        config: WorkersConfig,
        replica: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repo = repo
        self._bell = bell
        self._config = config
        self._replica = replica
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._wake = asyncio.Event()
        # Calls heard of as ended since the last look: read before the next poll of all.
        self._ended: set[str] = set()
        # Calls that ended at this time or later are what the next poll looks for.
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._withdrawals: set[asyncio.Task[None]] = set()
        bell.listen(self._heard)

    @property
    def caller_ttl(self) -> float:
        """How long a call outlives a caller that stopped renewing it."""
        return self._config.lease

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="agentrun-remote-calls"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._withdrawals:
            await asyncio.gather(*self._withdrawals, return_exceptions=True)

    def _heard(self, kind: str, key: str) -> None:
        if kind == "wdone" and key in self._waiting:
            self._ended.add(key)
            self._wake.set()

    async def call(self, tool: RemoteTool, args: Any, ctx: CallContext) -> Any:
        """Stores the call, waits for its outcome; the worker's result, or ToolFailure."""
        now = self._clock()
        traceparent = current_traceparent.get()
        record = CallRecord(
            id=uuid.uuid4().hex,
            tenant=ctx.tenant,
            tool=tool.name,
            execution_id=ctx.execution_id,
            node_id=ctx.node_id,
            attempt=ctx.attempt,
            idempotency_key=f"{ctx.idempotency_key}/{ctx.attempt}",
            args=args,
            caller=self._replica,
            caller_expires=now + self.caller_ttl,
            created_at=now,
            labels=dict(ctx.labels),
            deadline=ctx.deadline,
            trace={"traceparent": traceparent} if traceparent else None,
        )
        waiting = _Waiting(asyncio.get_running_loop().create_future(), ctx, tool.name)
        idle = not self._waiting
        self._waiting[record.id] = waiting
        try:
            try:
                await self._repo.enqueue(record)
            except StoreError as exc:
                raise ToolFailure(
                    "unavailable", f"the call of {tool.name!r} could not be stored: {exc}"
                ) from None
            self._bell.ring("wcall", tool.name)
            self.start()
            if idle:  # the loop sleeps until its next poll: now it must keep this call
                self._wake.set()
            ended = await waiting.future
        except asyncio.CancelledError:
            # The attempt stopped waiting (timeout, cancellation, hand-over): no worker
            # should run it any more, and the one running it is told.
            self._withdraw(record.id)
            raise
        finally:
            self._waiting.pop(record.id, None)
        return _outcome(ended)

    def _withdraw(self, call_id: str) -> None:
        async def cancel() -> None:
            try:
                gone = {
                    "type": "cancelled",
                    "message": "the attempt no longer waits for the call",
                    "details": {},
                }
                cancelled = await self._repo.cancel(call_id, now=self._clock(), error=gone)
                if cancelled is not None and cancelled.worker_id is not None:
                    self._bell.ring("wdone", call_id)
            except Exception as exc:  # the sweep cancels it once nobody keeps it
                log.debug("could not cancel call %s: %r", call_id, exc)

        task = asyncio.get_running_loop().create_task(cancel(), name="agentrun-remote-call-cancel")
        self._withdrawals.add(task)
        task.add_done_callback(self._withdrawals.discard)

    async def _loop(self) -> None:
        next_keep = next_sweep = next_poll = 0.0
        while True:
            # Its calls kept in time too while it waits for some, however long `poll` is.
            until = min(next_poll, next_keep) if self._waiting else next_poll
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, until - self._clock()))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                now = self._clock()
                if now >= next_poll:  # every call: leases, progress, notifications missed
                    next_poll = now + self._config.poll
                    await self._poll(now)
                if self._ended:  # those heard of as ended
                    ended, self._ended = list(self._ended), set()
                    await self._look(ended)
                if now >= next_keep:
                    await self._repo.keep_callers(self._replica, until=now + self.caller_ttl)
                    next_keep = now + self.caller_ttl / 3
                if now >= next_sweep:
                    next_sweep = now + SWEEP_SECONDS
                    await self._sweep(now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: look again at the next interval
                log.warning("remote calls: %r", exc)

    async def _poll(self, now: float) -> None:
        """What changed for this replica's calls (no payloads): the ended ones are read next
        (their notification may have been lost), progress becomes events, leases that expired
        (the worker's replica may be gone) end."""
        if not self._waiting:
            self._since = now
            return
        expired = []
        since, self._since = self._since, now - self._config.poll  # overlapping windows
        try:
            changed = await self._repo.changes(self._replica, since=since, now=now)
        except BaseException:
            self._since = since
            raise
        for status in changed:
            waiting = self._waiting.get(status.id)
            if waiting is None or waiting.future.done():
                continue
            if status.state.finished:
                self._ended.add(status.id)
                continue
            if status.progress and status.progress != waiting.progress:
                waiting.progress = status.progress
                if waiting.ctx.emit is not None:
                    waiting.ctx.emit("tool.progress", {"tool": waiting.tool, **status.progress})
            if status.state is CallState.LEASED and (status.lease_expires or 0) < now:
                expired.append(status.id)
        if expired:
            error = lost_error(
                "the worker stopped renewing its lease (no heartbeat) before it answered"
            )
            for call_id in await self._repo.expire(expired, now=now, error=error):
                self._ended.add(call_id)
                self._bell.ring("wdone", call_id)

    async def _look(self, ids: list[str]) -> None:
        """Resolves the calls of `ids` that ended, with their outcome."""
        ids = [i for i in ids if i in self._waiting and not self._waiting[i].future.done()]
        if not ids:
            return
        for row in await self._repo.get_calls(ids):
            waiting = self._waiting.get(row.id)
            if waiting is not None and not waiting.future.done() and row.state.finished:
                waiting.future.set_result(row)

    async def _sweep(self, now: float) -> None:
        orphans = await self._repo.sweep(
            now=now, keep_seconds=self._config.keep, worker_seen_after=now - 3 * self._config.lease
        )
        for call in orphans:
            if call.worker_id is not None:
                self._bell.ring("wdone", call.id)

    def waiting_count(self) -> int:
        return len(self._waiting)


def _outcome(call: CallRecord) -> Any:
    if call.state is CallState.SUCCEEDED:
        return call.result
    error = call.error or {}
    kind = str(error.get("type") or "tool_error")
    message = str(error.get("message") or "")
    if call.state is CallState.CANCELLED:
        # Withdrawn while this replica still waited (it stopped renewing its calls for a
        # while): another attempt may run.
        raise ToolFailure("worker_lost", f"the call of {call.tool!r} was withdrawn: {message}")
    raise ToolFailure(
        kind,
        message,
        details=error.get("details") or {},
        retry_after=error.get("retry_after"),
        retryable=error.get("retryable", True) is not False,
    )
