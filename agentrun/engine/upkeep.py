"""This replica's upkeep of its executions: leases claimed at start, renewed every lease/3 (one
row per replica, storage/execution_leases.py), orphans adopted as soon as a lease held elsewhere
expires, and the event log maintained.

`Engine.start` starts the loops (`start`: renewing at once, adopting orphans once the claim
at start is done), then claims and resumes what this replica held (`claim_at_start`);
`Engine.stop` cancels them. Renewing runs while the start claims, so a claim at start that
outlasts a lease keeps what it claimed first. A renewal and a claim of this replica never run
at once (`_leasing`): on PostgreSQL a claim skips rows another transaction locked, and a
renewal may lock every row this replica owns. A run whose lease was taken stops at once;
renewing never waits for the resumption of a large batch of adopted orphans. An own
execution a page skipped (on PostgreSQL, its row locked by another transaction then) is
claimed again by id until it is taken (`_retake_loop`). State machine instances keep their
leases in machine/leases.py (`LeaseKeeper`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agentrun.engine.runtime.claims import claim_own_in_pages, retake

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from agentrun.engine.engine import Engine
    from agentrun.storage.records import ExecutionRecord

log = logging.getLogger("agentrun.engine")

EVENT_UPKEEP_SECONDS = 3600.0
# The claim loop's shortest sleep: after a lease expired, and between claims of leases that
# are expired yet locked (a peer is claiming them at that moment).
CLAIM_MIN_DELAY = 0.05
# The pages a start claims its executions in: a small first one, so the first steps run again
# at once, then larger ones (each one claim: a few round trips for its rows).
CLAIM_FIRST_PAGE = 16
CLAIM_PAGE = 200


class Upkeep:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # a weak proxy: the engine holds this
        self.task: asyncio.Task[None] | None = None
        self._events_upkept = 0.0
        # Held by each claim and renewal of this replica's (their store calls, not resuming).
        self._leasing = asyncio.Lock()
        # The claim at start is over: orphans may be adopted (a page of the claim at start
        # takes this replica's own rows, and would take back an orphan adopted meanwhile).
        self._claimed_at_start = asyncio.Event()
        # The own executions the claim at start has not taken yet (`_retake_loop`); None
        # while unknown (this replica's executions could not be read before the pages).
        self._skipped: set[str] | None = None

    async def claim_at_start(self) -> None:
        """Claims and resumes unfinished executions: this replica id's own at once, others'
        whose leases expired. In pages by id, each resumed before the next is read: the first
        runs work again while the rest are still being claimed (claiming and reading a
        thousand rows in one go held the first step back by their whole cost).

        The ids this replica holds are read before the pages; those the pages did not take
        are claimed again later by id (`_retake_loop`). On PostgreSQL a page skips a row
        another transaction locked (FOR UPDATE SKIP LOCKED: a peer inserting a signal for it
        holds FOR KEY SHARE on it), and the next page moves on past its id; the claim loop
        never claims this replica's own rows (it would bump their epochs under its runs), so
        a skipped execution stayed this replica's, never resumed, until the next restart.
        The pages still skip rather than wait for the lock: a claim that waited would hold
        `_leasing`, and so this replica's renewals, for as long as a frozen peer held the row
        (up to the lease, when PostgreSQL ends it as idle in transaction), and could deadlock
        with a peer's transaction that locks rows in another order."""
        engine = self.engine
        try:
            total, self._skipped = await claim_own_in_pages(
                self._claim_rows,
                engine.runs.resumes.all,
                held=lambda: engine.store.held_executions(engine.replica_id),
                first=CLAIM_FIRST_PAGE,
                size=CLAIM_PAGE,
                lock=self._leasing,
                what="executions",
                log=log,
                going=lambda: not engine.draining,
            )
        finally:
            self._claimed_at_start.set()
        if total:
            log.info("claimed and resumed %d unfinished executions at start", total)

    def start(self) -> None:
        """Starts the loops (`stop` cancels them)."""
        self.task = asyncio.get_running_loop().create_task(self._loops(), name="agentrun-leases")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def upkeep_events(self) -> None:
        """Event storage for the next days, and retention (at start, then hourly)."""
        self._events_upkept = self.engine.clock()
        try:
            await self.engine.store.maintain_events(
                now=self.engine.clock(),
                retention_seconds=self.engine.config.event_retention_seconds,
            )
        except Exception:
            log.warning("event log upkeep failed", exc_info=True)

    async def _loops(self) -> None:
        """Lease upkeep, in two loops that never wait for each other: renewing this replica's
        leases must not be delayed by the resumption of a large batch of adopted orphans."""
        loops = [self._renew_loop(), self._retake_loop()]
        if self.engine.config.adopt:
            loops.append(self._claim_loop())
        await asyncio.gather(*loops)

    async def _renew_loop(self) -> None:
        """Renews this replica's lease every lease/3 (one row while it held throughout); a
        run whose lease was taken stops at once (its commits would be refused anyway). The
        first renewal is at once, while this replica holds only what it claimed at start: it
        registers the replica's row, so no later renewal rewrites every row it owns (the first,
        a lease/3 later, held the writer 262 ms with 30,000 executions started meanwhile)."""
        first = True
        while not self.engine.draining:
            if not first:
                await asyncio.sleep(self.engine.lease_seconds / 3)
            first = False
            if self.engine.draining:
                return
            try:
                # Only runs that existed before the renewal was read can be judged by its answer.
                before = set(self.engine.runs.live) | set(
                    self.engine.runs.idle
                )  # unloaded ones too
                async with self._leasing:
                    owned = await self.engine.store.renew_leases(
                        self.engine.replica_id,
                        lease_seconds=self.engine.lease_seconds,
                        now=self.engine.clock(),
                    )
                if owned is not None:  # None: held throughout, nothing was taken
                    self.engine.runs.stop_lost(before, owned)
            except Exception:
                log.warning("lease renewal failed", exc_info=True)

    async def _retake_loop(self) -> None:
        """Claims, by id, this replica's executions the claim at start skipped (see
        `claim_at_start`), a little later each time (from RETAKE_DELAY to lease/3),
        until none is left: each is taken, finished, or no longer this replica's. One
        running here is never claimed again (that would bump its epoch under its run)."""
        engine = self.engine
        await self._claimed_at_start.wait()
        if not self._skipped:
            return
        await retake(
            self._skipped,
            held=lambda: engine.store.held_executions(engine.replica_id),
            here=lambda: engine.runs,
            claim=lambda ids: self._claim_rows(len(ids), ids=ids),
            take=engine.runs.resumes.all,
            lock=self._leasing,
            longest=engine.lease_seconds / 3,
            what="executions",
            log=log,
            going=lambda: not engine.draining,
        )

    def _claim_rows(
        self, limit: int, after: str | None = None, *, ids: list[str] | None = None
    ) -> Awaitable[list[ExecutionRecord]]:
        """This replica's own executions and others' expired ones (`claim_executions`)."""
        engine = self.engine
        return engine.store.claim_executions(
            engine.replica_id,
            lease_seconds=engine.lease_seconds,
            now=engine.clock(),
            limit=limit,
            include_own=True,
            after_id=after,
            ids=ids,
        )

    async def _claim_loop(self) -> None:
        """Adopts executions whose holder stopped renewing (killed, frozen, cut off, or an
        `agentrun run` interrupted) as soon as their lease expires, whether this replica just
        started or has run for days. It claims only when `next_lease_expiry` says a lease is
        free (a claim locks and reads; with nothing to take it would cost that every period)."""
        engine = self.engine
        await self._claimed_at_start.wait()
        while not engine.draining:
            try:
                wait = await self._until_claimable()
            except Exception:
                # Unknown: claim after a period, as a replica without the expiry would.
                await asyncio.sleep(engine.lease_seconds / 3)
                wait = 0.0
            if wait > 0:
                await asyncio.sleep(wait)
                await self._upkeep_events_if_due()
                continue
            if engine.draining:
                return
            try:
                while True:
                    async with self._leasing:
                        orphans = await engine.store.claim_executions(
                            engine.replica_id,
                            lease_seconds=engine.lease_seconds,
                            now=engine.clock(),
                            limit=100,
                        )
                    await engine.runs.resumes.all(orphans)
                    if len(orphans) < 100 or engine.draining:
                        break
            except Exception:
                log.warning("claiming orphaned executions failed", exc_info=True)
            # A lease that expired yet is locked (a peer claims it now) is not claimed again
            # at once.
            await asyncio.sleep(CLAIM_MIN_DELAY)
            await self._upkeep_events_if_due()

    async def _upkeep_events_if_due(self) -> None:
        if self.engine.clock() - self._events_upkept > EVENT_UPKEEP_SECONDS:
            await self.upkeep_events()

    async def _until_claimable(self) -> float:
        """How long until a claim is worth making: 0 once the first lease held elsewhere
        expired lease/12 ago, else until then, at most lease/3 (nothing held elsewhere:
        lease/3, then look again). Waking at the expiry, not at a fixed poll, bounds a dead
        replica's take-over by its lease, the grace and the time of one claim."""
        period = self.engine.lease_seconds / 3
        expiry = await self.engine.store.next_lease_expiry(self.engine.replica_id)
        if expiry is None:
            return period
        # A grace of lease/12 past the expiry spares a live replica whose renewal is a little
        # late (a busy loop), and keeps the take-over well within lease + lease/3.
        grace = self.engine.lease_seconds / 12
        return min(period, max(0.0, expiry - self.engine.clock() + grace))
