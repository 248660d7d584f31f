"""The scheduler: which ready call starts next, across every execution in the process.

Nodes that call out (tools, agents, child workflows, map items) ask for a slot when they
are READY. A slot is granted when every limit that applies has room: running calls
globally, per tenant and per workflow, and a token from the node's rate-limit bucket. Over
a limit a node waits in READY; it is never failed for it.

Order: tenants take turns (round robin over tenants with waiting work), so one tenant's
10,000 ready nodes cannot starve another's one; within a tenant, higher execution priority
first, then node priority, then the order in which nodes became ready.

With no limits and no buckets configured, `active` is False and the executor starts nodes
directly: the scheduler costs nothing until it is needed.

The interface (`request`, `release`, `cancel`) is what a store-backed scheduler shared by
several replicas would implement too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


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
    # Running executions per tenant (quota); excess starts wait as PENDING.
    max_running_executions_per_tenant: int = 0
    # Starts waiting as PENDING per tenant beyond which StartExecution is refused.
    max_pending_executions_per_tenant: int = 10_000
    # Ready calls waiting for a slot, across the process, beyond which starts are refused.
    max_queued_nodes: int = 1_000_000
    rate_limits: dict[str, BucketSpec] = field(default_factory=dict)
    # Tool or agent provider name -> bucket name, for nodes that name none themselves.
    bindings: dict[str, str] = field(default_factory=dict)

    @property
    def limits_nodes(self) -> bool:
        return bool(
            self.max_running_nodes
            or self.max_running_nodes_per_tenant
            or self.max_running_nodes_per_workflow
            or self.rate_limits
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> SchedulerConfig:
        """From server config: `limits: {max_running_nodes: ..., rate_limits: {openai: {rate, per, burst}}}`."""
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
        unknown = set(data) - {f for f in cls.__dataclass_fields__ if f not in ("rate_limits", "bindings")}
        if unknown:
            raise ValueError(f"unknown scheduler settings: {', '.join(sorted(unknown))}")
        return cls(rate_limits=buckets, bindings=bindings, **{k: int(v) for k, v in data.items()})


class TokenBucket:
    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.spec = spec
        self.tokens = float(spec.burst)
        self.updated = now
        self._per_token = spec.per / spec.rate

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.spec.burst), self.tokens + (now - self.updated) / self._per_token)
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
    grant: Callable[[Ticket], None]
    owner: Any  # (run id, node key) for release/cancel
    enqueued_at: float
    throttled: bool = False
    cancelled: bool = False
    granted: bool = False

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


class Scheduler:
    def __init__(self, config: SchedulerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SchedulerConfig()
        self.active = self.config.limits_nodes
        self._clock = clock
        self._queues: dict[str, list[Ticket]] = {}
        self._turns: deque[str] = deque()  # tenants with waiting work, in turn order
        self._running_total = 0
        self._running_tenant: dict[str, int] = {}
        self._running_workflow: dict[tuple[str, str], int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._tickets: dict[Any, Ticket] = {}
        self.stats = SchedulerStats()

    # -------------------------------------------------------------- requests
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
    ) -> None:
        """Queues a ready call; `grant(ticket)` is called (on the loop) when it may start."""
        ticket = Ticket(
            key=(-execution_priority, -node_priority, next(self._arrivals)),
            tenant=tenant,
            workflow=workflow,
            bucket=bucket,
            grant=grant,
            owner=owner,
            enqueued_at=self._clock(),
        )
        self._tickets[owner] = ticket
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = []
        if not queue:
            self._turns.append(tenant)
        heapq.heappush(queue, ticket)
        self.stats.queued += 1
        self._dispatch()

    def release(self, owner: Any) -> None:
        """A granted call finished (or was abandoned): its slots are free again."""
        ticket = self._tickets.pop(owner, None)
        if ticket is None:
            return
        if ticket.granted:
            self._running_total -= 1
            self._running_tenant[ticket.tenant] -= 1
            self._running_workflow[(ticket.tenant, ticket.workflow)] -= 1
            self.stats.running -= 1
            self._dispatch()
        else:
            ticket.cancelled = True
            self.stats.queued -= 1

    cancel = release

    @property
    def queue_depth(self) -> int:
        return self.stats.queued

    def would_overflow(self) -> bool:
        return self.stats.queued >= self.config.max_queued_nodes

    # -------------------------------------------------------------- dispatch
    def _room(self, ticket: Ticket) -> bool:
        c = self.config
        if c.max_running_nodes and self._running_total >= c.max_running_nodes:
            return False
        if c.max_running_nodes_per_tenant and self._running_tenant.get(ticket.tenant, 0) >= c.max_running_nodes_per_tenant:
            return False
        return not (c.max_running_nodes_per_workflow and self._running_workflow.get((ticket.tenant, ticket.workflow), 0) >= c.max_running_nodes_per_workflow)

    def _dispatch(self) -> None:
        """Grants slots in turn order until nothing more fits."""
        now = self._clock()
        wake_in: float | None = None
        skipped = 0
        while self._turns and skipped < len(self._turns):
            if self.config.max_running_nodes and self._running_total >= self.config.max_running_nodes:
                self.stats.limit_hits += 1
                break
            tenant = self._turns[0]
            queue = self._queues[tenant]
            while queue and queue[0].cancelled:
                heapq.heappop(queue)
            if not queue:
                self._turns.popleft()
                continue
            ticket = queue[0]
            if not self._room(ticket):
                self.stats.limit_hits += 1
                self._turns.rotate(-1)
                skipped += 1
                continue
            if ticket.bucket is not None:
                bucket = self._bucket(ticket.bucket, now)
                if bucket is not None and not bucket.take(now):
                    delay = bucket.next_token_in(now)
                    wake_in = delay if wake_in is None else min(wake_in, delay)
                    if not ticket.throttled:
                        ticket.throttled = True
                        self.stats.rate_limit_waits += 1
                    self._turns.rotate(-1)
                    skipped += 1
                    continue
            heapq.heappop(queue)
            self._grant(ticket, now)
            skipped = 0
            # Round robin: the next tenant gets the next slot.
            if queue:
                self._turns.rotate(-1)
            else:
                self._turns.popleft()
        if wake_in is not None:
            self._arm(wake_in)

    def _grant(self, ticket: Ticket, now: float) -> None:
        ticket.granted = True
        self._running_total += 1
        self._running_tenant[ticket.tenant] = self._running_tenant.get(ticket.tenant, 0) + 1
        key = (ticket.tenant, ticket.workflow)
        self._running_workflow[key] = self._running_workflow.get(key, 0) + 1
        self.stats.queued -= 1
        self.stats.running += 1
        self.stats.granted += 1
        self.stats.total_wait_seconds += now - ticket.enqueued_at
        ticket.grant(ticket)

    def _bucket(self, name: str, now: float) -> TokenBucket | None:
        bucket = self._buckets.get(name)
        if bucket is None:
            spec = self.config.rate_limits.get(name)
            if spec is None:
                return None
            bucket = self._buckets[name] = TokenBucket(spec, now)
        return bucket

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


class Admission:
    """Which executions may run: a quota of running executions per tenant, and a workflow's
    `concurrency: {key, limit, on_limit}`. An execution over a limit waits as PENDING (in
    the store, so a restart finds it) and starts when a running one ends; `max_pending`
    bounds that wait per tenant (beyond it StartExecution is refused)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._running_tenant: dict[str, int] = {}
        self._running_key: dict[tuple[str, str, str], list[str]] = {}
        self._pending_tenant: dict[str, deque[str]] = {}
        self._pending_key: dict[tuple[str, str, str], deque[str]] = {}
        # execution id -> (tenant, concurrency key or None)
        self._owned: dict[str, tuple[str, tuple[str, str, str] | None]] = {}
        self._waiting: dict[str, tuple[str, tuple[str, str, str] | None, int]] = {}

    def pending_count(self, tenant: str) -> int:
        queue = self._pending_tenant.get(tenant)
        return len(queue) if queue else 0

    def has_room(self, tenant: str, key: tuple[str, str, str] | None, limit: int) -> bool:
        quota = self.config.max_running_executions_per_tenant
        if quota and self._running_tenant.get(tenant, 0) >= quota:
            return False
        if key is not None and limit and len(self._running_key.get(key, ())) >= limit:
            return False
        # First come, first served within a key. Starts pending for the tenant with room in
        # its quota are all held by their own keys (each end re-runs `_next`), so they do
        # not hold back a start with another key.
        return not (key is not None and self._pending_key.get(key))

    def running_with_key(self, key: tuple[str, str, str]) -> list[str]:
        return list(self._running_key.get(key, ()))

    def admit(self, execution_id: str, tenant: str, key: tuple[str, str, str] | None) -> None:
        self._running_tenant[tenant] = self._running_tenant.get(tenant, 0) + 1
        if key is not None:
            self._running_key.setdefault(key, []).append(execution_id)
        self._owned[execution_id] = (tenant, key)

    def enqueue(self, execution_id: str, tenant: str, key: tuple[str, str, str] | None, limit: int, *, front: bool = False) -> None:
        self._pending_tenant.setdefault(tenant, deque())
        (self._pending_tenant[tenant].appendleft if front else self._pending_tenant[tenant].append)(execution_id)
        if key is not None:
            self._pending_key.setdefault(key, deque())
            (self._pending_key[key].appendleft if front else self._pending_key[key].append)(execution_id)
        self._waiting[execution_id] = (tenant, key, limit)

    def forget_pending(self, execution_id: str) -> None:
        entry = self._waiting.pop(execution_id, None)
        if entry is None:
            return
        tenant, key, _ = entry
        with _suppress_value_error():
            self._pending_tenant[tenant].remove(execution_id)
        if key is not None:
            with _suppress_value_error():
                self._pending_key[key].remove(execution_id)

    def finished(self, execution_id: str) -> list[str]:
        """Frees the execution's place; returns the pending executions that may start now."""
        self.forget_pending(execution_id)
        owned = self._owned.pop(execution_id, None)
        if owned is None:
            return []
        tenant, key = owned
        self._running_tenant[tenant] -= 1
        if key is not None:
            running = self._running_key.get(key)
            if running and execution_id in running:
                running.remove(execution_id)
        return self._next()

    def _next(self) -> list[str]:
        ready: list[str] = []
        quota = self.config.max_running_executions_per_tenant
        for tenant, queue in self._pending_tenant.items():
            i = 0
            while i < len(queue):
                if quota and self._running_tenant.get(tenant, 0) >= quota:
                    break
                execution_id = queue[i]
                _, key, limit = self._waiting[execution_id]
                if key is not None and limit and len(self._running_key.get(key, ())) >= limit:
                    i += 1  # this key is full; a later start with another key may go
                    continue
                if key is not None and self._pending_key[key][0] != execution_id:
                    i += 1
                    continue
                del queue[i]
                if key is not None:
                    self._pending_key[key].popleft()
                del self._waiting[execution_id]
                self.admit(execution_id, tenant, key)
                ready.append(execution_id)
        return ready


def _suppress_value_error() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(ValueError)
