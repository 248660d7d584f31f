"""The scheduler: which ready call starts next, across every execution in the process (or,
on PostgreSQL, across every replica: `agentrun.engine.fleet`).

Nodes that call out (tools, agents, child workflows, map items) ask for a slot when they
are READY. A slot is granted when every limit that applies has room: running calls
globally, per tenant, per workflow and per target (a tool or agent provider), and a token
from the node's rate-limit bucket. Over a limit a node waits in READY; it is never failed
for it.

Order: tenants take turns (round robin over tenants with waiting work), so one tenant's
10,000 ready nodes cannot starve another's one; within a tenant, higher execution priority
first, then node priority, then the order in which nodes became ready. A tenant's calls
wait in one lane per target, so a call to a target at its limit does not hold back the
tenant's calls to another target. `grant_round` is that order, the one place it is
written: the local `Scheduler` runs it on its queues, the fleet scheduler on the rows the
replicas share.

With no limits and no buckets configured, `active` is False and the executor starts nodes
directly: the scheduler costs nothing until it is needed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrun.engine.budgets import Budgets, Claim


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A token bucket: `rate` tokens per `per` seconds, holding at most `burst`."""

    rate: float
    per: float = 1.0
    burst: int = 1


@dataclass(slots=True)
class SchedulerConfig:
    # 0 means no limit.
    max_running_nodes: int = 0
    max_running_nodes_per_tenant: int = 0
    max_running_nodes_per_workflow: int = 0
    # Running calls per target: a tool name or an agent provider name -> limit.
    max_running_per_target: dict[str, int] = field(default_factory=dict)
    # Running executions per tenant (quota); excess starts wait as PENDING.
    max_running_executions_per_tenant: int = 0
    # Starts waiting as PENDING per tenant beyond which StartExecution is refused.
    max_pending_executions_per_tenant: int = 10_000
    # Ready calls waiting for a slot, across the process, beyond which starts are refused.
    max_queued_nodes: int = 1_000_000
    rate_limits: dict[str, BucketSpec] = field(default_factory=dict)
    # Tool or agent provider name -> bucket name, for nodes that name none themselves.
    bindings: dict[str, str] = field(default_factory=dict)
    # On PostgreSQL, node limits and buckets hold for every replica of the database (False:
    # for each replica alone, as on SQLite and in memory).
    shared: bool = True

    @property
    def limits_nodes(self) -> bool:
        return bool(
            self.max_running_nodes
            or self.max_running_nodes_per_tenant
            or self.max_running_nodes_per_workflow
            or self.max_running_per_target
            or self.rate_limits
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> SchedulerConfig:
        """From server config: `limits: {max_running_nodes: ..., max_running_per_target:
        {http.request: 5}, rate_limits: {openai: {rate, per, burst}}}`."""
        from agentrun.engine.durations import parse_duration

        data = dict(data or {})
        buckets = {}
        for name, spec in (data.pop("rate_limits", None) or {}).items():
            per = spec.get("per", 1.0)
            buckets[name] = BucketSpec(
                rate=float(spec["rate"]),
                per=parse_duration(per) if isinstance(per, str) else float(per),
                burst=int(spec.get("burst", 1)),
            )
        bindings = dict(data.pop("bindings", None) or {})
        targets = data.pop("max_running_per_target", None) or {}
        if not isinstance(targets, Mapping):
            raise ValueError(
                "limits.max_running_per_target: expected a mapping of tool or provider names to limits"
            )
        per_target = {}
        for name, limit in targets.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(
                    f"limits.max_running_per_target.{name}: expected a positive integer, got {limit!r}"
                )
            per_target[str(name)] = limit
        shared = data.pop("shared", True)
        if not isinstance(shared, bool):
            raise ValueError(f"limits.shared: expected true or false, got {shared!r}")
        fixed = ("rate_limits", "bindings", "max_running_per_target", "shared")
        unknown = set(data) - {f for f in cls.__dataclass_fields__ if f not in fixed}
        if unknown:
            raise ValueError(f"unknown scheduler settings: {', '.join(sorted(unknown))}")
        return cls(
            rate_limits=buckets,
            bindings=bindings,
            max_running_per_target=per_target,
            shared=shared,
            **{k: int(v) for k, v in data.items()},
        )


class TokenBucket:
    def __init__(self, spec: BucketSpec, now: float, tokens: float | None = None) -> None:
        self.spec = spec
        self.tokens = float(spec.burst) if tokens is None else tokens
        self.updated = now
        self._per_token = spec.per / spec.rate

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(
                float(self.spec.burst), self.tokens + (now - self.updated) / self._per_token
            )
            self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_token_in(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) * self._per_token)


@dataclass(slots=True)
class Ticket:
    """One ready call waiting for a slot."""

    key: tuple[int, int, int]  # (-execution priority, -node priority, arrival)
    tenant: str
    workflow: str
    bucket: str | None
    grant: Callable[[Ticket], None] | None
    owner: Any  # (run id, node key) for release/cancel
    enqueued_at: float
    # The tool or agent provider called ("" for a child workflow), for per-target limits.
    target: str = ""
    throttled: bool = False
    cancelled: bool = False
    granted: bool = False
    # The fleet scheduler's row number for this ticket.
    ref: int = 0

    def __lt__(self, other: Ticket) -> bool:
        return self.key < other.key


@dataclass(slots=True)
class SchedulerStats:
    queued: int = 0
    running: int = 0
    granted: int = 0
    limit_hits: int = 0
    rate_limit_waits: int = 0
    total_wait_seconds: float = 0.0


class Running:
    """Calls holding slots, counted at every level a limit applies to."""

    __slots__ = ("config", "targets", "tenants", "total", "workflows")

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.total = 0
        self.tenants: dict[str, int] = {}
        self.workflows: dict[tuple[str, str], int] = {}
        self.targets: dict[str, int] = {}

    def add(self, tenant: str, workflow: str, target: str, count: int = 1) -> None:
        self.total += count
        self.tenants[tenant] = self.tenants.get(tenant, 0) + count
        self.workflows[(tenant, workflow)] = self.workflows.get((tenant, workflow), 0) + count
        self.targets[target] = self.targets.get(target, 0) + count

    def full(self) -> bool:
        limit = self.config.max_running_nodes
        return bool(limit) and self.total >= limit

    def tenant_full(self, tenant: str) -> bool:
        limit = self.config.max_running_nodes_per_tenant
        return bool(limit) and self.tenants.get(tenant, 0) >= limit

    def room(self, ticket: Ticket) -> bool:
        """Room at the workflow and target levels (the caller checks global and tenant)."""
        c = self.config
        if c.max_running_nodes_per_workflow and (
            self.workflows.get((ticket.tenant, ticket.workflow), 0)
            >= c.max_running_nodes_per_workflow
        ):
            return False
        limit = c.max_running_per_target.get(ticket.target) if c.max_running_per_target else None
        return not (limit and self.targets.get(ticket.target, 0) >= limit)


# A tenant's waiting calls: one heap per target.
Lanes = dict[str, list[Ticket]]


def grant_round(
    turns: deque[str],
    queues: dict[str, Lanes],
    running: Running,
    token: Callable[[Ticket], float | None],
    stats: SchedulerStats,
) -> tuple[list[Ticket], float | None]:
    """Grants slots in turn order until nothing more fits; returns the tickets granted (popped
    from their lanes and counted in `running`) and, when a bucket held one back, the seconds
    until its next token. `token(ticket)` takes a token for the ticket's bucket (None: it
    may go) or says how long until one. `turns` holds each tenant of `queues` once; a tenant
    whose lanes are empty leaves both."""
    granted: list[Ticket] = []
    wake_in: float | None = None
    skipped = 0
    while turns and skipped < len(turns):
        if running.full():
            stats.limit_hits += 1
            break
        tenant = turns[0]
        lanes = queues[tenant]
        heads = []
        for target in list(lanes):
            heap = lanes[target]
            while heap and heap[0].cancelled:
                heapq.heappop(heap)
            if heap:
                heads.append(heap[0])
            else:
                del lanes[target]
        if not heads:
            turns.popleft()
            del queues[tenant]
            continue
        chosen = None
        if running.tenant_full(tenant):
            stats.limit_hits += 1
        else:
            heads.sort()
            for head in heads:
                if not running.room(head):
                    stats.limit_hits += 1
                    continue
                delay = token(head) if head.bucket is not None else None
                if delay is not None:
                    wake_in = delay if wake_in is None else min(wake_in, delay)
                    if not head.throttled:
                        head.throttled = True
                        stats.rate_limit_waits += 1
                    continue
                chosen = head
                break
        if chosen is None:
            turns.rotate(-1)
            skipped += 1
            continue
        heapq.heappop(lanes[chosen.target])
        running.add(chosen.tenant, chosen.workflow, chosen.target)
        granted.append(chosen)
        skipped = 0
        # Round robin: the next tenant gets the next slot.
        turns.rotate(-1)
    return granted, wake_in


class BaseScheduler:
    """What the local and the fleet scheduler share: the interface the run calls
    (`request`, `release`, `active`, `stats`, `queue_depth`), tickets by owner, and the
    bookkeeping of a grant."""

    def __init__(self, config: SchedulerConfig | None, clock: Callable[[], float]) -> None:
        self.config = config or SchedulerConfig()
        self.active = self.config.limits_nodes
        self._clock = clock
        self._tickets: dict[Any, Ticket] = {}
        # Arrival numbers (the fleet scheduler's row numbers too).
        self._arrivals = itertools.count(1)
        self.stats = SchedulerStats()
        # The engine's budgets: an agent call they cover reserves before it asks for a slot.
        self.budgets: Budgets | None = None

    async def start(self) -> None:
        """Nothing to set up by default (the fleet scheduler joins its replicas here)."""

    async def close(self) -> None:
        """Nothing to give back by default."""

    def bucket_for(self, node_bucket: str, target: str) -> str | None:
        return node_bucket or self.config.bindings.get(target) or None

    def request(
        self,
        owner: Any,
        *,
        tenant: str,
        workflow: str,
        execution_priority: int,
        node_priority: int,
        bucket: str | None,
        grant: Callable[[Ticket], None],
        target: str = "",
        claim: Claim | None = None,
    ) -> None:
        """Queues a ready call; `grant(ticket)` is called (on the loop) when it may start. A
        call with a budget `claim` is queued once its budgets hold its estimate."""
        if claim is not None and self.budgets is not None:
            self.budgets.admit(
                claim,
                lambda: self.request(
                    owner,
                    tenant=tenant,
                    workflow=workflow,
                    execution_priority=execution_priority,
                    node_priority=node_priority,
                    bucket=bucket,
                    grant=grant,
                    target=target,
                ),
            )
            return
        ticket = Ticket(
            key=(-execution_priority, -node_priority, next(self._arrivals)),
            tenant=tenant,
            workflow=workflow,
            bucket=bucket,
            grant=grant,
            owner=owner,
            enqueued_at=self._clock(),
            target=target,
        )
        self._tickets[owner] = ticket
        self.stats.queued += 1
        self._queue(ticket)

    def release(self, owner: Any) -> None:
        """A granted call finished (or a waiting one was abandoned): its slots are free again,
        and its budgets are charged what it used."""
        if self.budgets is not None:
            self.budgets.release(owner)
        ticket = self._tickets.pop(owner, None)
        if ticket is None:
            return
        if ticket.granted:
            self.stats.running -= 1
        else:
            ticket.cancelled = True
            self.stats.queued -= 1
        self._released(ticket)

    cancel = release

    def queued_seconds(self, ticket: Ticket) -> float:
        """How long `ticket` waited, on the scheduler's clock (a node's `queued_seconds`)."""
        return self._clock() - ticket.enqueued_at

    @property
    def queue_depth(self) -> int:
        return self.stats.queued

    def would_overflow(self) -> bool:
        return self.stats.queued >= self.config.max_queued_nodes

    def _start(self, ticket: Ticket, now: float) -> None:
        """A granted ticket: counted, then its call told to go."""
        ticket.granted = True
        self.stats.queued -= 1
        self.stats.running += 1
        self.stats.granted += 1
        self.stats.total_wait_seconds += now - ticket.enqueued_at
        assert ticket.grant is not None
        ticket.grant(ticket)

    def _queue(self, ticket: Ticket) -> None:
        raise NotImplementedError

    def _released(self, ticket: Ticket) -> None:
        raise NotImplementedError


class Scheduler(BaseScheduler):
    """The scheduler of one process: its queues, counts and buckets in memory."""

    def __init__(
        self, config: SchedulerConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(config, clock)
        self._queues: dict[str, Lanes] = {}
        self._turns: deque[str] = deque()  # tenants with waiting work, in turn order
        self._running = Running(self.config)
        self._buckets: dict[str, TokenBucket] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _queue(self, ticket: Ticket) -> None:
        lanes = self._queues.get(ticket.tenant)
        if lanes is None:
            lanes = self._queues[ticket.tenant] = {}
            self._turns.append(ticket.tenant)
        heapq.heappush(lanes.setdefault(ticket.target, []), ticket)
        self._dispatch()

    def _released(self, ticket: Ticket) -> None:
        if ticket.granted:
            self._running.add(ticket.tenant, ticket.workflow, ticket.target, -1)
            self._dispatch()

    # -------------------------------------------------------------- dispatch
    def _dispatch(self) -> None:
        now = self._clock()
        granted, wake_in = grant_round(
            self._turns, self._queues, self._running, self._token, self.stats
        )
        for ticket in granted:
            self._start(ticket, now)
        if wake_in is not None:
            self._arm(wake_in)

    def _token(self, ticket: Ticket) -> float | None:
        assert ticket.bucket is not None
        now = self._clock()
        bucket = self._buckets.get(ticket.bucket)
        if bucket is None:
            spec = self.config.rate_limits.get(ticket.bucket)
            if spec is None:
                return None
            bucket = self._buckets[ticket.bucket] = TokenBucket(spec, now)
        return None if bucket.take(now) else bucket.next_token_in(now)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(delay + 1e-4, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()
