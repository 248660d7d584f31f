"""Leases on state machine instances: one replica drives an instance at a time.

The replica holding an instance's lease is the one that fires its timers, resumes its pending
event (an action waiting for its next attempt) and waits for its invoked execution; every
commit it makes carries `(owner, lease_epoch)` and the store refuses it (`LeaseLost`) once the
lease is another replica's or another epoch's. How a replica comes to hold a lease:
- it created the instance;
- an event was sent to it (`MachineEngine` acquires the lease when it loads the instance,
  taking it from the replica holding it: that replica's next commit is refused, and it lets
  the instance go);
- its claim loop took it over: the instance's lease expired (its replica was killed, frozen,
  or stopped and released it) and it has something to drive (a timer, a pending event, an
  invoked execution). Instances with nothing to drive wait in the store for their next event.

`LeaseKeeper` renews this replica's leases every lease/3 and lets go of the instances whose
lease was taken (their timers disarmed, their tasks cancelled); it claims orphans every
`period` (lease/3 by default), and at start takes back at once what this replica id held.
Replicas sharing a database need distinct `replica_id`s (EngineConfig)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")

# Instances claimed per round of the claim loop (another round follows at once when full).
CLAIM_BATCH = 100


class LeaseKeeper:
    def __init__(self, machines: MachineEngine, *, period: float | None = None) -> None:
        self.machines = machines
        self.owner = machines.engine.replica_id
        self.lease_seconds = machines.engine.lease_seconds
        self.period = period if period else self.lease_seconds / 3
        self.adopt = machines.engine.config.adopt
        self._tasks: list[asyncio.Task[None]] = []

    def expiry(self) -> float:
        """When a lease taken now expires."""
        return self.machines.clock() + self.lease_seconds

    async def start(self) -> None:
        """Takes back what this replica id held before a restart (at once: nobody else drives
        those until their leases expire), then keeps leases renewed and orphans claimed."""
        await self._claim(include_own=True)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew_loop(), name="agentrun-machine-leases")]
        if self.adopt:
            self._tasks.append(loop.create_task(self._claim_loop(), name="agentrun-machine-claims"))

    async def stop(self) -> None:
        """Stops renewing and claiming."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def release(self) -> None:
        """Lets this replica's leases expire now (it stops), so that the other replicas take
        its instances over at once."""
        with contextlib.suppress(Exception):
            await self.machines.store.release_leases(self.owner)

    async def _claim(self, *, include_own: bool = False) -> None:
        m = self.machines
        while True:
            claimed = await m.store.claim(
                self.owner,
                lease_seconds=self.lease_seconds,
                now=m.clock(),
                limit=CLAIM_BATCH,
                include_own=include_own,
            )
            for record in claimed:
                try:
                    await m.take_over(record)
                except Exception:
                    log.warning("could not take instance %s over", record.id, exc_info=True)
            if len(claimed) < CLAIM_BATCH:
                return

    async def _renew_loop(self) -> None:
        m = self.machines
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                # Only instances held before the renewal was read can be judged by its answer.
                before = m.held_ids()
                owned = await m.store.renew_leases(
                    self.owner, lease_seconds=self.lease_seconds, now=m.clock()
                )
                for instance_id in before - owned:
                    m.let_go(instance_id, "its lease was taken by another replica")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("instance lease renewal failed", exc_info=True)

    async def _claim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("claiming orphaned instances failed", exc_info=True)
