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
`period` (lease/3 by default), and at start takes back at once what this replica id held,
renewing meanwhile (a start that takes longer than a lease keeps what it took first); an own
instance the start's pages skipped (on PostgreSQL, its row locked by another transaction then)
it claims again by id until it is taken (`_retake_loop`). Its claims and renewals never run at
once (`_leasing`): on PostgreSQL a claim skips rows another transaction locked, and a renewal
locks every instance this replica holds.
Replicas sharing a database need distinct `replica_id`s (EngineConfig)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from agentrun.engine.machine.errors import InstanceNotFound
from agentrun.engine.machine.instances import Instance
from agentrun.engine.runtime.claims import claim_in_pages, claim_own_in_pages, retake
from agentrun.storage.base import LeaseLost
from agentrun.storage.machines import InstanceRecord, InstanceState

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")

# Instances claimed per round of the claim loop (another round follows at once when full).
CLAIM_BATCH = 100


class LeaseKeeper:
    def __init__(self, machines: MachineEngine, *, period: float | None = None) -> None:
        self.m = machines
        self.owner = machines.engine.replica_id
        self.lease_seconds = machines.engine.lease_seconds
        self.period = period if period else self.lease_seconds / 3
        self.adopt = machines.engine.config.adopt
        self._tasks: list[asyncio.Task[None]] = []
        self._loading: dict[str, asyncio.Future[Instance]] = {}
        # Held by each claim and renewal (their store calls, not the taking over).
        self._leasing = asyncio.Lock()

    def expiry(self) -> float:
        """When a lease taken now expires."""
        return self.m.clock() + self.lease_seconds

    async def start(self) -> None:
        """Takes back what this replica id held before a restart (at once: nobody else drives
        those until their leases expire), then claims orphans; renews leases throughout.

        The ids this replica holds are read before the pages; those the pages did not take
        are claimed again later by id (`_retake_loop`). On PostgreSQL a page skips a row
        another transaction locked (FOR UPDATE SKIP LOCKED: a peer inserting a row that
        references the instance holds FOR KEY SHARE on it), and the next page moves on past
        its id; the claim loop never claims this replica's own instances and the renewals
        keep their leases, so a skipped instance stayed this replica's, its timers never
        fired, until the next restart. The pages still skip rather than wait (a claim that
        waited would hold `_leasing`, and so the renewals, for as long as a peer held the row)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew_loop(), name="agentrun-machine-leases")]
        try:
            _, skipped = await claim_own_in_pages(
                self._claim_rows,
                self._take,
                held=lambda: self.m.store.held_instances(self.owner),
                first=CLAIM_BATCH,
                size=CLAIM_BATCH,
                lock=self._leasing,
                what="instances",
                log=log,
            )
        except BaseException:
            await self.stop()
            raise
        if skipped:
            self._tasks.append(
                loop.create_task(self._retake_loop(skipped), name="agentrun-machine-retake")
            )
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
            await self.m.store.release_leases(self.owner)

    async def _claim(self) -> None:
        """Orphans: others' instances whose leases expired, in pages."""
        await claim_in_pages(
            lambda limit, after: self._claim_rows(limit, after, include_own=False),
            self._take,
            first=CLAIM_BATCH,
            size=CLAIM_BATCH,
            lock=self._leasing,
        )

    def _claim_rows(
        self,
        limit: int,
        after: str | None = None,
        *,
        ids: list[str] | None = None,
        include_own: bool = True,
    ) -> Awaitable[list[InstanceRecord]]:
        return self.m.store.claim(
            self.owner,
            lease_seconds=self.lease_seconds,
            now=self.m.clock(),
            limit=limit,
            include_own=include_own,
            after_id=after,
            ids=ids,
        )

    async def _take(self, claimed: list[InstanceRecord]) -> None:
        for record in claimed:
            try:
                await self.take_over(record)
            except Exception:
                log.warning("could not take instance %s over", record.id, exc_info=True)

    async def _retake_loop(self, skipped: set[str]) -> None:
        """Claims, by id, this replica's instances the start skipped (see `start`), a little
        later each time (from RETAKE_DELAY to lease/3), until none is left: each is taken,
        finished, no longer this replica's or with nothing to drive. One this replica holds
        already (`held_ids`: loaded by an event meanwhile) is never claimed again (that would
        bump its epoch under it)."""
        m = self.m
        await retake(
            skipped,
            held=lambda: m.store.held_instances(self.owner),
            here=self.held_ids,
            claim=lambda ids: self._claim_rows(len(ids), ids=ids),
            take=self._take,
            lock=self._leasing,
            longest=self.lease_seconds / 3,
            what="instances",
            log=log,
            going=lambda: not m.stopping,
        )

    async def _renew_loop(self) -> None:
        m = self.m
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                # Only instances held before the renewal was read can be judged by its answer.
                before = self.held_ids()
                async with self._leasing:
                    owned = await m.store.renew_leases(
                        self.owner, lease_seconds=self.lease_seconds, now=m.clock()
                    )
                for instance_id in before - owned:
                    self.let_go(instance_id, "its lease was taken by another replica")
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

    # ------------------------------------------------------------------ holding
    async def load(self, instance_id: str, tenant: str | None, *, take: bool = True) -> Instance:
        """The live instance, loaded from the store if needed (its lease acquired: `take`n
        from another replica, or only if nobody else holds it); `tenant` None: any tenant's.
        LeaseLost when another replica holds it and `take` is False."""
        inst = self.m.instances.get(instance_id)
        while inst is None:
            pending = self._loading.get(instance_id)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[instance_id] = pending
                try:
                    record = await self.m.store.acquire(
                        instance_id,
                        self.m.replica_id,
                        lease_seconds=self.m.leases.lease_seconds,
                        now=self.m.clock(),
                        take=take,
                    )
                    if record is None:
                        if not take:
                            raise LeaseLost(f"instance {instance_id} is not held here")
                        raise InstanceNotFound(
                            f"instance {instance_id!r} not found", instance=instance_id
                        )
                    pending.set_result(await self.install(record))
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: nobody else may be waiting
                finally:
                    del self._loading[instance_id]
            try:
                inst = await asyncio.shield(pending)
            except LeaseLost:
                if not take:
                    raise
                # Another caller's load would not take the lease; this one does.
        if tenant is not None and inst.record.tenant != tenant:
            raise InstanceNotFound(f"instance {instance_id!r} not found", instance=instance_id)
        return inst

    async def install(self, record: InstanceRecord) -> Instance:
        """The live instance for `record`, whose lease this replica holds: its timers armed,
        its pending event resumed, its invoked execution waited for."""
        instance_id = record.id
        wf = await self.m.engine.store.get_workflow(
            record.tenant, record.workflow, record.version, include_deleted=True
        )
        if wf is None:
            raise InstanceNotFound(
                f"instance {instance_id!r}: its workflow is gone", instance=instance_id
            )
        plan = await self.m.plan_of(wf)
        ids: dict[str, Any] = dict(await self.m.store.event_ids(instance_id))
        active = record.state is InstanceState.ACTIVE
        timers = await self.m.store.list_timers(instance_id=instance_id) if active else []
        inst = Instance(plan, record, ids)
        inst.fence = (self.m.replica_id, record.lease_epoch)
        inst.timer_keys = {t.key for t in timers}
        self.m.loop.keep(inst)
        if active:
            if record.pending is not None:
                self.m.retries.adopt(inst)
            armed = self.m.timers.handles.get(instance_id, {})
            for timer in timers:
                if timer.key not in armed:
                    self.m.timers.arm(timer)
            if record.invoke_execution and instance_id not in self.m.invokes.tasks:
                self.m.invokes.watch(instance_id, record.invoke_execution, record.tenant)
        return inst

    async def take_over(self, record: InstanceRecord) -> None:
        """An instance the lease keeper claimed (its replica is gone): drive it from here."""
        inst = self.m.instances.get(record.id)
        if inst is not None:
            inst.fence = (self.m.replica_id, record.lease_epoch)
            return
        await self.install(record)

    def let_go(self, instance_id: str, why: str) -> None:
        """Stops driving an instance whose lease another replica holds now: forgets it (an
        event sent here loads it again, taking the lease back), disarms its timers, stops
        waiting for its invoked execution and its pending event's retry."""
        log.info("instance %s: let go here, %s", instance_id, why)
        inst = self.m.instances.pop(instance_id, None)
        self.m.timers.drop(instance_id)
        child = self.m.invokes.tasks.pop(instance_id, None)
        if child is not None:
            child.cancel()
        if (
            inst is not None
            and inst.resumer is not None
            and inst.resumer is not asyncio.current_task()
        ):
            inst.resumer.cancel()

    def held_ids(self) -> set[str]:
        """The instances this replica drives: loaded and ACTIVE, or with armed timers or an
        invoked execution it waits for."""
        live = {
            i for i, inst in self.m.instances.items() if inst.record.state is InstanceState.ACTIVE
        }
        return live | set(self.m.timers.handles) | set(self.m.invokes.tasks)
