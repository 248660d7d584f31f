"""Which executions may run: a quota of running executions per tenant
(`max_running_executions_per_tenant`) and a workflow's `concurrency: {key, limit, on_limit}`.

An execution over a limit waits as PENDING (in the store, so a restart finds it) and starts
when a running one ends; `max_pending_executions_per_tenant` bounds that wait per tenant
(beyond it StartExecution is refused). `on_limit: cancel_newest` refuses the new start,
`cancel_oldest` cancels the oldest running execution with the key and puts the new one first
in line. Within a key, first come, first served; a start with another key is not held back.

`LocalAdmission` decides in memory (the memory store). `SharedAdmission` decides in the store's
database (`agentrun.storage.admissions`), so the limits hold for every replica (and for
`agentrun run` beside `agentrun serve` on one SQLite file): an execution another replica must
start is announced to it (`admit` on the notification channel), and each replica also looks
for its waiting executions' admission every `POLL_SECONDS` (SQLite has no notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentrun.engine.scheduler import SchedulerConfig
from agentrun.storage.base import Store
from agentrun.storage.records import Admitted, ckey_of

if TYPE_CHECKING:
    from agentrun.storage.admissions import AdmissionTable

__all__ = ["Admitted", "LocalAdmission", "SharedAdmission", "make_admission"]

log = logging.getLogger("agentrun.engine.admission")

# How often a replica looks whether its waiting executions were admitted elsewhere.
POLL_SECONDS = 1.0


def make_admission(
    config: SchedulerConfig, store: Store, *, notify: Callable[[str], None]
) -> LocalAdmission | SharedAdmission:
    """The shared admission on a SQL store (unless `limits: {shared: false}`), else the local one.
    `notify(execution_id)` announces an admission to the replica holding that execution."""
    database = store.database
    if config.shared and database is not None:
        from agentrun.storage.admissions import AdmissionTable

        return SharedAdmission(config, AdmissionTable(database), notify=notify)
    return LocalAdmission(config)


class LocalAdmission:
    """One process's admission, in memory (the memory store, or `limits: {shared: false}`)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._running_tenant: dict[str, int] = {}
        self._running_key: dict[tuple[str, str, str], list[str]] = {}
        self._pending_tenant: dict[str, deque[str]] = {}
        self._pending_key: dict[tuple[str, str, str], deque[str]] = {}
        # execution id -> (tenant, concurrency key or None)
        self._owned: dict[str, tuple[str, tuple[str, str, str] | None]] = {}
        self._waiting: dict[str, tuple[str, tuple[str, str, str] | None, int]] = {}

    # -------------------------------------------------------------- the engine's calls
    async def pending_count(self, tenant: str) -> int:
        return self._pending(tenant)

    def pending_now(self, tenant: str) -> int | None:
        """`pending_count` without a coroutine when it needs no read (here: always)."""
        return self._pending(tenant)

    async def arrive(
        self,
        execution_id: str,
        tenant: str,
        key: tuple[str, str, str] | None,
        limit: int,
        on_limit: str,
    ) -> Admitted:
        if self._has_room(tenant, key, limit):
            self._admit(execution_id, tenant, key)
            return Admitted("run")
        quota = self.config.max_running_executions_per_tenant
        quota_full = bool(quota) and self._running_tenant.get(tenant, 0) >= quota
        if on_limit == "cancel_newest" and key is not None and not quota_full:
            return Admitted("cancel_newest")
        if on_limit == "cancel_oldest" and key is not None and not quota_full:
            oldest = self._running_with_key(key)[:1]
            self._enqueue(execution_id, tenant, key, limit, front=True)
            return Admitted("cancel_oldest", tuple(oldest))
        self._enqueue(execution_id, tenant, key, limit)
        return Admitted("queued")

    def unlimited(self, key: tuple[str, str, str] | None) -> bool:
        """A start under no tenant quota and no concurrency key: `arrive` will let it run
        without asking anything, so the engine may store it already running (its creation
        and first turn in one commit)."""
        return key is None and not self.config.max_running_executions_per_tenant

    def arrive_unlimited(self, execution_id: str, tenant: str) -> None:
        """`arrive` for a start `unlimited` let run, without a coroutine: the engine calls it
        when the start's commit is settled, from the commit's own callback."""
        self._admit(execution_id, tenant, None)

    async def resume(
        self,
        execution_id: str,
        tenant: str,
        key: tuple[str, str, str] | None,
        limit: int,
        *,
        pending: bool,
    ) -> bool:
        if pending and not self._has_room(tenant, key, limit):
            self._enqueue(execution_id, tenant, key, limit)
            return False
        if execution_id not in self._owned:
            self._admit(execution_id, tenant, key)
        return True

    async def forget(self, execution_id: str) -> None:
        self._forget(execution_id)

    async def finished(self, execution_id: str, *, ended: bool) -> list[str]:
        """The run stopped here (`ended`: for good); the waiting executions admitted now."""
        return self._finished(execution_id)

    def finished_now(self, execution_id: str, *, ended: bool) -> list[str] | None:
        """`finished` without a coroutine (every decision is made here): the runs' way to give
        a place back without a task per ended execution."""
        return self._finished(execution_id)

    def waiting(self, execution_id: str) -> bool:
        return execution_id in self._waiting

    def take(self, execution_id: str) -> bool:
        return False

    async def start(self) -> None:
        """Nothing to watch: every decision is made here."""

    async def close(self) -> None:
        """Nothing to give back."""

    def _pending(self, tenant: str) -> int:
        queue = self._pending_tenant.get(tenant)
        return len(queue) if queue else 0

    def _has_room(self, tenant: str, key: tuple[str, str, str] | None, limit: int) -> bool:
        quota = self.config.max_running_executions_per_tenant
        if quota and self._running_tenant.get(tenant, 0) >= quota:
            return False
        if key is not None and limit and len(self._running_key.get(key, ())) >= limit:
            return False
        # First come, first served within a key. Starts pending for the tenant with room in
        # its quota are all held by their own keys (each end re-runs `_next`), so they do
        # not hold back a start with another key.
        return not (key is not None and self._pending_key.get(key))

    def _running_with_key(self, key: tuple[str, str, str]) -> list[str]:
        return list(self._running_key.get(key, ()))

    def _admit(self, execution_id: str, tenant: str, key: tuple[str, str, str] | None) -> None:
        self._running_tenant[tenant] = self._running_tenant.get(tenant, 0) + 1
        if key is not None:
            self._running_key.setdefault(key, []).append(execution_id)
        self._owned[execution_id] = (tenant, key)

    def _enqueue(
        self,
        execution_id: str,
        tenant: str,
        key: tuple[str, str, str] | None,
        limit: int,
        *,
        front: bool = False,
    ) -> None:
        self._pending_tenant.setdefault(tenant, deque())
        (self._pending_tenant[tenant].appendleft if front else self._pending_tenant[tenant].append)(
            execution_id
        )
        if key is not None:
            self._pending_key.setdefault(key, deque())
            (self._pending_key[key].appendleft if front else self._pending_key[key].append)(
                execution_id
            )
        self._waiting[execution_id] = (tenant, key, limit)

    def _forget(self, execution_id: str) -> None:
        entry = self._waiting.pop(execution_id, None)
        if entry is None:
            return
        tenant, key, _ = entry
        with contextlib.suppress(ValueError):
            self._pending_tenant[tenant].remove(execution_id)
        if key is not None:
            with contextlib.suppress(ValueError):
                self._pending_key[key].remove(execution_id)

    def _finished(self, execution_id: str) -> list[str]:
        """Frees the execution's place; returns the pending executions that may start now."""
        self._forget(execution_id)
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
                self._admit(execution_id, tenant, key)
                ready.append(execution_id)
        return ready


class SharedAdmission:
    """Admission decided in the database for every replica (see the module docstring).
    Executions without a key, under no tenant quota, take no row and no round trip."""

    def __init__(
        self, config: SchedulerConfig, table: AdmissionTable, *, notify: Callable[[str], None]
    ) -> None:
        self.config = config
        self.table = table
        self._notify = notify
        # Executions this replica holds PENDING until their admission.
        self._waiting: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # A start (or a resume) with a concurrency key was seen: pending counts are read, and
        # places given back, from then on.
        self._keyed = False
        # Starts an execution admitted while it waited here (set by the engine).
        self.on_admitted: Callable[[str], None] = lambda _id: None

    def _counted(self, key: tuple[str, str, str] | None) -> bool:
        return key is not None or bool(self.config.max_running_executions_per_tenant)

    @property
    def _quota(self) -> int:
        return self.config.max_running_executions_per_tenant

    async def pending_count(self, tenant: str) -> int:
        # Rows exist only under a quota or a key: without either (seen here), no read.
        return await self.table.pending_count(tenant) if self._counted(None) or self._keyed else 0

    def pending_now(self, tenant: str) -> int | None:
        """`pending_count` without a coroutine when it needs no read (no quota, no key seen:
        0); None when it reads the table (await `pending_count`)."""
        return None if self._counted(None) or self._keyed else 0

    async def arrive(
        self,
        execution_id: str,
        tenant: str,
        key: tuple[str, str, str] | None,
        limit: int,
        on_limit: str,
    ) -> Admitted:
        if not self._counted(key):
            return Admitted("run")
        self._keyed = self._keyed or key is not None
        admitted = await self.table.arrive(
            execution_id, tenant, ckey_of(key), limit, self._quota, on_limit
        )
        if admitted.verdict in ("queued", "cancel_oldest"):
            self._hold(execution_id)
        return admitted

    def unlimited(self, key: tuple[str, str, str] | None) -> bool:
        """As `LocalAdmission.unlimited`: such a start takes no row and no round trip."""
        return not self._counted(key)

    def arrive_unlimited(self, execution_id: str, tenant: str) -> None:
        """As `LocalAdmission.arrive_unlimited`: `arrive` writes nothing for such a start."""

    async def resume(
        self,
        execution_id: str,
        tenant: str,
        key: tuple[str, str, str] | None,
        limit: int,
        *,
        pending: bool,
    ) -> bool:
        if not self._counted(key):
            return True
        self._keyed = self._keyed or key is not None
        may_run = await self.table.resume(
            execution_id, tenant, ckey_of(key), limit, self._quota, pending=pending
        )
        if not may_run:
            self._hold(execution_id)
        return may_run

    async def forget(self, execution_id: str) -> None:
        self._waiting.discard(execution_id)
        await self.table.forget(execution_id)

    async def finished(self, execution_id: str, *, ended: bool) -> list[str]:
        """Only an execution that ended gives its place back: one stopped here (a lost
        lease, a store failure) goes on elsewhere, in its place. Without a quota, and with no
        keyed execution started or resumed here, none ending here took a place: no write."""
        now = self.finished_now(execution_id, ended=ended)
        if now is not None:
            return now
        admitted = await self.table.depart(execution_id, self._quota)
        return self._route(admitted)

    def finished_now(self, execution_id: str, *, ended: bool) -> list[str] | None:
        """`finished` when it writes nothing (no place was taken: the common case, without a
        quota or a key), else None: the caller awaits `finished`. The one place that rule is."""
        if not ended or not (self._quota or self._keyed):
            return []
        return None

    def waiting(self, execution_id: str) -> bool:
        return execution_id in self._waiting

    def take(self, execution_id: str) -> bool:
        """An announced admission: True if this replica holds the execution (and now starts it)."""
        if execution_id in self._waiting:
            self._waiting.discard(execution_id)
            return True
        return False

    def _route(self, admitted: list[str]) -> list[str]:
        """The admitted executions this replica holds (to start here); the others are announced."""
        mine = []
        for execution_id in admitted:
            if self.take(execution_id):
                mine.append(execution_id)
            else:
                self._notify(execution_id)
        return mine

    def _hold(self, execution_id: str) -> None:
        self._waiting.add(execution_id)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._poll(), name="agentrun-admission"
            )

    async def _poll(self) -> None:
        """While executions wait here: those admitted elsewhere (a lost notification, SQLite)
        start, and places left by executions that ended without giving them back are freed."""
        while self._waiting and not self._closed:
            await asyncio.sleep(POLL_SECONDS)
            try:
                for execution_id in self._route(await self.table.reap(self._quota)):
                    self.on_admitted(execution_id)
                for execution_id in await self.table.running_among(sorted(self._waiting)):
                    if self.take(execution_id):
                        self.on_admitted(execution_id)
            except Exception:
                log.warning("admission check failed; retrying", exc_info=True)

    async def start(self) -> None:
        """Nothing to set up: the poll starts with the first waiting execution."""

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
