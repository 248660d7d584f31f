"""The store interface: what the engine needs from persistence, and nothing more.

A `Store` is one typed interface over repositories per aggregate, which every backend
(memory.py, sql.py) provides: `workflows` (`WorkflowRepository`), `executions`
(`ExecutionRepository`: executions, their nodes, events, signals and leases),
`notifications` (`NotificationChannel`, cross-replica wake-ups) and `instances` (the state
machine store, machines.py). The engine calls the store's own methods, each the method of
the same name on its repository.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    SignalRecord,
    WorkflowRecord,
)

if TYPE_CHECKING:
    from agentrun.storage.machines import MachineStore
    from agentrun.storage.sqldb import SqlDatabase


class StoreError(Exception):
    """A store backend failed (connection lost, disk full); the operation may be retried."""


class LeaseLost(Exception):
    """A fenced commit was refused: the execution is leased to another replica (or epoch)."""


class WorkflowRepository(abc.ABC):
    """Workflow definitions, versioned per (tenant, name)."""

    @abc.abstractmethod
    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        """Stores a new version: `record.version` is ignored and set to latest + 1."""

    @abc.abstractmethod
    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        """The given version, or the latest when `version` is None; None if absent or deleted
        (unless `include_deleted`: executions of a deleted workflow keep running)."""

    @abc.abstractmethod
    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        """Latest version of each workflow, ordered by name, names after `after_name`."""

    @abc.abstractmethod
    async def delete_workflow(self, tenant: str, name: str) -> bool:
        """Deletes every version from view; executions of it still find theirs (see
        get_workflow), and a new workflow of the same name continues the version numbers.
        False if it did not exist."""


class ExecutionRepository(abc.ABC):
    """Executions with their nodes, events and signals, and the leases replicas hold on them.

    Contract every backend keeps (tests/storage/test_store_contract.py checks it):
    - errors: StoreError when the backend is unavailable (retry later); KeyError for a batch
      or signal naming an unknown execution; ValueError for what the backend refuses (an
      event sequence that exists, a value it cannot hold).
    - `commit` is atomic: all of a batch or none of it is visible after a crash.
    - once `commit` returns, the batch survives a process kill.
    - events are append-only; (execution_id, sequence) is unique.
    - records returned are copies: mutating them changes nothing stored.
    """

    @abc.abstractmethod
    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        """Inserts an execution; with a `request_id` already used by the tenant, returns
        (the existing execution, False) and writes nothing."""

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    @abc.abstractmethod
    async def list_executions(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        newest_first: bool = False,
    ) -> list[ExecutionRecord]:
        """Ordered by id (ids sort by creation time), descending with `newest_first`; `after_id`
        is the last id of the page before in that order. Only those created at or after
        `created_after` and before `created_before` (seconds since the epoch)."""

    @abc.abstractmethod
    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        """Every execution not in a terminal state, for recovery at start."""

    @abc.abstractmethod
    async def get_nodes(self, execution_id: str) -> list[NodeRecord]: ...

    @abc.abstractmethod
    async def list_waits(
        self,
        tenant: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[NodeRecord]:
        """Nodes (and map items) WAITING with a `wait` (a wait for a signal) in the tenant's
        unfinished executions, ordered by (execution_id, node_id), after that pair."""

    @abc.abstractmethod
    async def commit(self, batch: Batch) -> None:
        """Updates the execution's run state (state, output, error, vars, times,
        last_sequence, labels: the execution must exist), upserts nodes, appends events and
        marks signals consumed."""

    # Leases ----------------------------------------------------------------
    @abc.abstractmethod
    async def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int = 100,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[ExecutionRecord]:
        """Leases unfinished executions to `owner`: those with no owner or another's expired
        lease (never `owner`'s own by expiry), and with `include_own` those `owner` holds already (a restarted replica takes its own
        back at once). Each claim increments `lease_epoch`; concurrent claimers never get
        the same execution. In id order, at most `limit`, with ids after `after_id`: a
        restart claims its own in pages (claimed ones are its own too, so only the key moves
        the page on) and resumes each page before reading the next. With `ids`, only those
        (a restart takes back the own ones its pages skipped: a row another transaction
        locked is skipped, not waited for)."""

    async def held_executions(self, owner: str) -> set[str]:
        """The ids of the unfinished executions `owner` holds (its lease current or not)."""
        return {r.id for r in await self.list_unfinished_executions() if r.owner == owner}

    @abc.abstractmethod
    async def renew_leases(
        self, owner: str, *, lease_seconds: float, now: float
    ) -> set[str] | None:
        """Extends every unfinished lease `owner` holds; returns their execution ids, or None
        when it held them all throughout (a store that renews one lease per replica knows
        that without reading them: nothing of `owner`'s was taken since its last renewal)."""

    async def next_lease_expiry(self, owner: str) -> float | None:
        """When the first lease of an unfinished execution held by anyone but `owner` expires
        (0 when one has no holder), so a replica can claim it the moment it is free instead of
        at its next poll; None when there is nothing to take over."""
        return None

    @abc.abstractmethod
    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        """Hands leases back (expires them now) so another replica may claim at once."""

    # Event log upkeep ------------------------------------------------------
    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        """Prepares the next days' event storage and drops the events of executions that
        ended more than `retention_seconds` ago (None: keep everything). Executions and
        their node records stay. Returns how many units (partitions or executions) were
        dropped. Safe to call from several replicas at once."""
        return 0

    # Events ----------------------------------------------------------------
    @abc.abstractmethod
    async def list_events(
        self, execution_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events with sequence > after_sequence, ascending."""

    # Signals ---------------------------------------------------------------
    @abc.abstractmethod
    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        """Buffers a signal and assigns `seq`; a known (execution_id, signal_id) returns
        (the stored one, False)."""

    @abc.abstractmethod
    async def pending_signals(self, execution_id: str) -> list[SignalRecord]:
        """Signals not yet consumed, in arrival order."""

    @abc.abstractmethod
    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        """The signal stored under `signal_id`, consumed or not (a retry after the end
        must find the signal its first call stored)."""


class NotificationChannel(Protocol):
    """Cross-replica wake-ups (storage/notifications.py on SQL databases)."""

    async def notify(self, kind: str, keys: str) -> None:
        """Tells every replica sharing the store that something happened to an execution
        (`keys`: its id, or comma-joined ids; `signal`: a signal or control request was
        stored). A single-process store has nobody to tell."""

    def listen(self, callback: Callable[[str, str], None]) -> None:
        """Calls `callback(kind, execution_id)` for notifications from other replicas:
        `signal`, and `events` after each commit elsewhere (for Watch streams)."""

    def watch(self, keys: Callable[[], Collection[str]]) -> None:
        """`keys()`: the keys someone in this process follows. A channel that cannot hear
        every key cheaply asks it which `events` to look for (SQLite hears a state machine
        instance's new history only for these); the others ignore it."""


class Store(abc.ABC):
    """Durable state of workflows and executions: a backend's repositories behind the one
    interface the engine uses. Each method is its repository's method of the same name (the
    contract is written there); a backend sets `workflows`, `executions` and
    `notifications`, and gives `instances`.

    `commit_at_once` (None where a backend has none; typed here, so that the engine needs no
    getattr): `commit` without a coroutine when the backend can write the batch now, whether
    it did: always where nothing waits (memory), when SQLite writes it at once; False: nothing
    written, and `commit` takes the batch. A store that wraps another (a test's proxy) has
    none, so its `commit` sees every batch."""

    workflows: WorkflowRepository
    executions: ExecutionRepository
    notifications: NotificationChannel
    # The SQL core under a SQL store, which the tables of other modules (scheduler slots,
    # admissions, budgets, worker calls) share; None for a store in the process.
    database: SqlDatabase | None = None
    commit_at_once: Callable[[Batch], bool] | None = None

    async def open(self) -> None:
        """Connects and migrates the schema; idempotent."""

    async def close(self) -> None:
        """Releases connections; committed data stays."""

    @property
    def instances(self) -> MachineStore:
        """The repository of state machine instances beside this store (same database, or
        the same process): one object per store, opened by its user (`MachineEngine.start`)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state machine instances")

    # Workflows -------------------------------------------------------------
    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        return await self.workflows.create_workflow(record)

    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        return await self.workflows.get_workflow(
            tenant, name, version, include_deleted=include_deleted
        )

    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        return await self.workflows.list_workflows(tenant, limit=limit, after_name=after_name)

    async def workflow_version(
        self, tenant: str, name: str, version: int | None = None
    ) -> int | None:
        """The number of the version `get_workflow(tenant, name, version)` would return, None
        where it returns None: what a start asks once its cached workflow expires, to see a
        new version or a delete made elsewhere without reading the spec again (a stored
        version never changes). Here through `get_workflow`; a SQL store reads the one column."""
        record = await self.get_workflow(tenant, name, version)
        return None if record is None else record.version

    async def delete_workflow(self, tenant: str, name: str) -> bool:
        return await self.workflows.delete_workflow(tenant, name)

    # Executions, their nodes, events, signals and leases -----------------
    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        return await self.executions.create_execution(record, nodes, events)

    def create_execution_soon(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> asyncio.Future[tuple[ExecutionRecord, bool]]:
        """`create_execution` under way now: a future that completes once the execution is
        stored (or refused), whether or not anyone still awaits it (a caller shields it, so
        that leaving cancels nothing). Here a task; SqlStore hands its group commit's own
        future instead (a start then costs no task and one loop turn less)."""
        return asyncio.ensure_future(self.create_execution(record, nodes, events))

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return await self.executions.get_execution(execution_id)

    async def list_executions(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[ExecutionState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        newest_first: bool = False,
    ) -> list[ExecutionRecord]:
        return await self.executions.list_executions(
            tenant,
            limit=limit,
            after_id=after_id,
            workflow=workflow,
            states=states,
            created_after=created_after,
            created_before=created_before,
            newest_first=newest_first,
        )

    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        return await self.executions.list_unfinished_executions()

    async def get_nodes(self, execution_id: str) -> list[NodeRecord]:
        return await self.executions.get_nodes(execution_id)

    async def list_waits(
        self,
        tenant: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[NodeRecord]:
        return await self.executions.list_waits(
            tenant, limit=limit, after=after, execution_id=execution_id
        )

    async def commit(self, batch: Batch) -> None:
        await self.executions.commit(batch)

    async def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int = 100,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[ExecutionRecord]:
        return await self.executions.claim_executions(
            owner,
            lease_seconds=lease_seconds,
            now=now,
            limit=limit,
            include_own=include_own,
            after_id=after_id,
            ids=ids,
        )

    async def held_executions(self, owner: str) -> set[str]:
        return await self.executions.held_executions(owner)

    async def renew_leases(
        self, owner: str, *, lease_seconds: float, now: float
    ) -> set[str] | None:
        return await self.executions.renew_leases(owner, lease_seconds=lease_seconds, now=now)

    async def next_lease_expiry(self, owner: str) -> float | None:
        return await self.executions.next_lease_expiry(owner)

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        await self.executions.release_leases(owner, execution_ids)

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        return await self.executions.maintain_events(now=now, retention_seconds=retention_seconds)

    async def list_events(
        self, execution_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        return await self.executions.list_events(
            execution_id, after_sequence=after_sequence, limit=limit
        )

    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        return await self.executions.add_signal(signal)

    async def pending_signals(self, execution_id: str) -> list[SignalRecord]:
        return await self.executions.pending_signals(execution_id)

    async def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        """What reloading one unloaded run reads (a signal to an idle execution waits for
        it): the execution's record, node rows (`get_nodes`) and unconsumed signals
        (`pending_signals`), or None when there is no such execution. This default makes
        the three reads; the SQL store makes one query, the memory store one step."""
        record = await self.get_execution(execution_id)
        if record is None:
            return None
        return record, await self.get_nodes(execution_id), await self.pending_signals(execution_id)

    async def restore_reads(
        self, execution_ids: Sequence[str]
    ) -> dict[str, tuple[list[NodeRecord], list[SignalRecord]]]:
        """What rebuilding these executions' runs reads (recovery of many at once): each
        one's node rows (`get_nodes`) and unconsumed signals (`pending_signals`), by id. This
        default reads one execution after the other through those two methods; the SQL store
        reads them all in two queries."""
        return {i: (await self.get_nodes(i), await self.pending_signals(i)) for i in execution_ids}

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        return await self.executions.get_signal(execution_id, signal_id)

    # Cross-replica wake-ups ------------------------------------------------
    async def notify(self, kind: str, execution_id: str) -> None:
        await self.notifications.notify(kind, execution_id)

    def listen(self, callback: Callable[[str, str], None]) -> None:
        self.notifications.listen(callback)

    def watch(self, keys: Callable[[], Collection[str]]) -> None:
        self.notifications.watch(keys)
