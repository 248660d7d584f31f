"""The scheduler shared by every replica of one PostgreSQL database.

`FleetScheduler` has the local `Scheduler`'s interface (`request`, `release`, `active`,
`stats`), so the run asks it for slots exactly as it asks the local one. Its queues and
counts are rows (`agentrun.storage.slots`): a request becomes a waiting row, a grant a
granted row, a release a deleted row. The decision is the local scheduler's own
`grant_round`, run over the fleet's rows in a transaction that rounds of all replicas take
one at a time; so limits, priorities and tenant turns hold across the fleet as in one
process.

Cost: one round (a transaction of a few statements) carries every request and release
that arrived while the previous round ran, so a busy replica pays one round for many
calls; an idle one pays one round per request and one per release. A round that grants
another replica's row tells it by NOTIFY; a replica with waiting rows also looks every
`POLL_SECONDS` (a lost notification, a bucket refilling while the replica that saw it
empty has gone).

Leases: each replica renews its lease in every round and every lease/3; rows of a replica
whose lease expired are deleted by the next renewal of any other, so a killed replica's
slots come back within lease + lease/3. A replica frozen past its lease (its rows taken)
writes them back at its next round: for that moment the fleet may run more calls than a
limit allows, as with any lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentrun.engine.scheduler import (
    BaseScheduler,
    Lanes,
    Running,
    Scheduler,
    SchedulerConfig,
    SchedulerStats,
    Ticket,
    TokenBucket,
    grant_round,
)
from agentrun.storage.base import Store
from agentrun.storage.slot_rows import Decision, FleetView, SlotRow

if TYPE_CHECKING:
    from agentrun.storage.slots import SlotTable

log = logging.getLogger("agentrun.engine.fleet")

# A replica with waiting rows looks this often even without a notification.
POLL_SECONDS = 1.0
# Waiting rows read per lane in a round when no global limit bounds the grants.
LANE_DEPTH = 64
# After a failed round (the database unavailable), the next one waits this long.
RETRY_SECONDS = 0.5


def make_scheduler(
    config: SchedulerConfig, store: Store, *, replica_id: str, lease_seconds: float
) -> Scheduler | FleetScheduler:
    """The fleet scheduler on PostgreSQL when node limits or buckets are configured (and
    `shared` is not turned off); the local one otherwise (memory, SQLite)."""
    database = store.database
    if config.limits_nodes and config.shared and database is not None and not database.sqlite:
        from agentrun.storage.slots import SlotTable

        return FleetScheduler(
            config,
            SlotTable(database),
            replica_id=replica_id,
            lease_seconds=lease_seconds,
            listen=store.listen,
        )
    return Scheduler(config)


class FleetScheduler(BaseScheduler):
    """`Scheduler`'s interface over the fleet's slot rows (see the module docstring)."""

    def __init__(
        self,
        config: SchedulerConfig,
        table: SlotTable,
        *,
        replica_id: str,
        lease_seconds: float,
        listen: Callable[[Callable[[str, str], None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, clock)
        self._table = table
        self._ttl = lease_seconds
        self._listen = listen
        # One name per process: a replica restarted under the same id holds none of the
        # slots its previous process held (those come back when that lease expires).
        # (`,` and `/` separate names and rows in notifications.)
        self.name = f"{replica_id.replace(',', '_').replace('/', '_')}.{secrets.token_hex(4)}"
        # Sent to the database (waiting or granted), by row number.
        self._sent: dict[int, Ticket] = {}
        self._adds: dict[int, Ticket] = {}
        self._removes: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._timer: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        # A round failed: the next one reads all of this replica's grants, not only news.
        self._resync = False
        # Read this replica's rows granted by others (a notification may have been lost).
        self._news = False

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Joins the fleet (a lease for this replica's rows) and listens for grants."""
        if self._listen is not None:
            self._listen(self._on_notification)
        try:
            await self._table.renew(self.name, ttl=self._ttl, held=self._held)
        except Exception:
            log.warning("could not join the shared scheduler yet; retrying", exc_info=True)
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(), name="agentrun-slots"
        )

    async def close(self) -> None:
        """Gives every row of this replica back (running calls were stopped by then)."""
        self._closed = True
        for task in (self._renewer, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._timer is not None:
            self._timer.cancel()
        try:
            await self._table.leave(self.name)
        except Exception:
            log.warning(
                "could not give back the scheduler slots of %s; they return when its lease expires",
                self.name,
            )

    # -------------------------------------------------------------- requests
    def _queue(self, ticket: Ticket) -> None:
        # The arrival number is also the row's number.
        ticket.ref = ticket.key[2]
        self._adds[ticket.ref] = ticket
        self._kick()

    def _released(self, ticket: Ticket) -> None:
        if ticket.cancelled and self._adds.pop(ticket.ref, None) is not None:
            return  # never sent
        self._sent.pop(ticket.ref, None)
        self._removes.append(ticket.ref)
        self._kick()

    # -------------------------------------------------------------- rounds
    def _kick(self) -> None:
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._rounds(), name="agentrun-slots-round")

    def _on_notification(self, kind: str, item: str) -> None:
        """`NAME/12/13t`: rows granted to replica NAME (13 after a bucket held it back);
        `*`: slots came free."""
        if kind != "slots":
            return
        if item == "*":
            if self._waiting():
                self._news = True
                self._kick()
            return
        name, _, rows = item.partition("/")
        if name != self.name:
            return
        self._granted([(int(n.rstrip("t")), n.endswith("t")) for n in rows.split("/") if n])

    def _waiting(self) -> bool:
        return self.stats.queued > 0

    async def _rounds(self) -> None:
        """Rounds until nothing new arrived meanwhile; each carries every change so far."""
        while not self._closed:
            self._again = False
            adds = list(self._adds.values())
            removes = self._removes
            self._adds, self._removes = {}, []
            for ticket in adds:
                self._sent[ticket.ref] = ticket
            news, self._news = self._news, False
            try:
                result = await self._table.round(
                    self.name,
                    adds=[self._row(t) for t in adds],
                    removes=removes,
                    dispatcher=_Decider(self.config, self.stats),
                    news=news,
                    resync=self._resync,
                )
            except Exception:
                log.warning("scheduler round failed; retrying", exc_info=True)
                # Sent again in front of newer ones (their order is their arrival); the round
                # may have committed all the same, so the next one also reads every grant.
                pending = {t.ref: t for t in adds if not t.cancelled}
                for ref in pending:
                    self._sent.pop(ref, None)
                self._adds = {**pending, **self._adds}
                self._removes = removes + self._removes
                self._resync = self._news = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._resync = False
            self._granted(result.granted)
            self._arm(result.wake_in)
            if not (self._again or result.more or self._adds or self._removes):
                return

    def _granted(self, rows: list[tuple[int, bool]]) -> None:
        """Starts this replica's calls whose rows were granted (by its round or another's);
        a row learnt twice, or released meanwhile (its row goes in the next round), is skipped."""
        now = self._clock()
        for n, throttled in rows:
            ticket = self._sent.get(n)
            if ticket is None or ticket.cancelled or ticket.granted:
                continue
            if throttled and not ticket.throttled:
                ticket.throttled = True
                self.stats.rate_limit_waits += 1
            self._start(ticket, now)

    def _row(self, ticket: Ticket, *, granted: bool = False) -> SlotRow:
        return SlotRow(
            replica=self.name,
            n=ticket.ref,
            tenant=ticket.tenant,
            workflow=ticket.workflow,
            target=ticket.target,
            bucket=ticket.bucket,
            exec_rank=ticket.key[0],
            node_rank=ticket.key[1],
            throttled=ticket.throttled,
            granted=granted,
        )

    def _held(self) -> list[SlotRow]:
        """The rows this replica had sent, for a lease that lapsed (rows taken back)."""
        return [self._row(t, granted=t.granted) for t in self._sent.values() if not t.cancelled]

    def _arm(self, wake_in: float | None) -> None:
        """The next look without a notification: a bucket's next token, or a poll while
        this replica has rows waiting."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or not self._waiting():
            return
        if wake_in is not None and wake_in + 1e-3 < POLL_SECONDS:
            self._timer = asyncio.get_running_loop().call_later(wake_in + 1e-3, self._kick)
        else:
            self._timer = asyncio.get_running_loop().call_later(POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._news = True
        self._kick()

    async def _renew_loop(self) -> None:
        while not self._closed:
            try:
                await self._table.renew(self.name, ttl=self._ttl, held=self._held)
            except Exception:
                log.warning("scheduler lease renewal failed", exc_info=True)
            await asyncio.sleep(self._ttl / 3)


class _Decider:
    """One round's decision: `grant_round` over the fleet's rows, the turns starting
    after the tenant that got the last slot."""

    def __init__(self, config: SchedulerConfig, stats: SchedulerStats) -> None:
        self.config = config
        self.stats = stats
        self.running = Running(config)
        self.depth = 0

    def lane_depth(self, running: list[tuple[str, str, str, int]]) -> int:
        """No lane can take more than the free global slots, or a tenant's or workflow's
        whole limit, in one round."""
        for tenant, workflow, target, count in running:
            self.running.add(tenant, workflow, target, count)
        c = self.config
        caps = [LANE_DEPTH]
        if c.max_running_nodes:
            caps.append(max(0, c.max_running_nodes - self.running.total))
        caps.extend(
            limit
            for limit in (c.max_running_nodes_per_tenant, c.max_running_nodes_per_workflow)
            if limit
        )
        self.depth = min(caps)
        return self.depth

    def decide(self, view: FleetView) -> Decision:
        queues: dict[str, Lanes] = {}
        tickets: dict[tuple[str, int], SlotRow] = {}
        for row in view.candidates:
            ticket = Ticket(
                key=(row.exec_rank, row.node_rank, row.seq),
                tenant=row.tenant,
                workflow=row.workflow,
                bucket=row.bucket,
                grant=None,
                owner=(row.replica, row.n),
                enqueued_at=0.0,
                target=row.target,
                throttled=row.throttled,
            )
            tickets[ticket.owner] = row
            # Rows come sorted within their lane: a sorted list is a heap.
            queues.setdefault(row.tenant, {}).setdefault(row.target, []).append(ticket)
        names = sorted(queues)
        after = [t for t in names if t > view.cursor]
        turns = deque(after + [t for t in names if t <= view.cursor])
        buckets: dict[str, TokenBucket] = {}

        def token(ticket: Ticket) -> float | None:
            assert ticket.bucket is not None
            bucket = buckets.get(ticket.bucket)
            if bucket is None:
                spec = self.config.rate_limits.get(ticket.bucket)
                if spec is None:
                    return None
                tokens, updated = view.buckets.get(ticket.bucket, (float(spec.burst), view.now))
                bucket = buckets[ticket.bucket] = TokenBucket(spec, updated, tokens)
            return None if bucket.take(view.now) else bucket.next_token_in(view.now)

        was_throttled = {owner for owner, row in tickets.items() if row.throttled}
        # The local stats count this replica's waits; the fleet's rows are counted here.
        stats = SchedulerStats()
        granted, wake_in = grant_round(turns, queues, self.running, token, stats)
        self.stats.limit_hits += stats.limit_hits
        grants = []
        for ticket in granted:
            row = tickets[ticket.owner]
            row.throttled = ticket.throttled
            grants.append(row)
        throttled = [
            tickets[t.owner]
            for lanes in queues.values()
            for heap in lanes.values()
            for t in heap
            if t.throttled and t.owner not in was_throttled
        ]
        per_lane: dict[tuple[str, str], int] = {}
        for row in view.candidates:
            per_lane[(row.tenant, row.target)] = per_lane.get((row.tenant, row.target), 0) + 1
        # A lane read to its depth and emptied may hold more rows that could go now.
        more = bool(granted) and any(
            count >= self.depth and not queues.get(tenant, {}).get(target)
            for (tenant, target), count in per_lane.items()
        )
        return Decision(
            grants=grants,
            throttled=throttled,
            buckets={name: (b.tokens, b.updated) for name, b in buckets.items()},
            cursor=granted[-1].tenant if granted else view.cursor,
            wake_in=wake_in,
            more=more,
        )
