"""The store on a SQL database: its repositories on one SQL core.

`SqlStore` holds one `SqlDatabase` (sqldb.py: SQLite or PostgreSQL, chosen by the URL) and the
repositories that share it: workflows (workflows.py), executions with their nodes, events,
signals and leases (executions.py), notifications (notifications.py) and state machine
instances (machines.py). It opens and closes them in order; every `Store` method is the
repository's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from agentrun.storage.base import Store
from agentrun.storage.executions import SqlExecutions
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.machines_sql import SqlMachineStore
from agentrun.storage.notifications import Notifications
from agentrun.storage.records import EventRecord, ExecutionRecord, NodeRecord, SignalRecord
from agentrun.storage.sqldb import IDLE_IN_TRANSACTION_MS, SqlDatabase
from agentrun.storage.workflows import SqlWorkflows

__all__ = ["IDLE_IN_TRANSACTION_MS", "SqlStore"]


class SqlStore(Store):
    """A `Store` on SQLite or PostgreSQL.

    `synchronous` is SQLite's PRAGMA: FULL (the default) makes every returned `commit` survive
    power loss; NORMAL is faster in WAL mode but may lose the last commits on power loss (never
    on a process crash) — choose it only when a re-run of the last steps is acceptable.
    `lease_seconds`: the lease its replicas keep (PostgreSQL bounds idle transactions by it).

    `database` is the SQL core (connections, `transaction()`, `read()`) that the repositories
    of the same database share, those of other modules too (scheduler slots, worker calls).
    """

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        self.database: SqlDatabase = SqlDatabase.create(
            url, synchronous=synchronous, lease_seconds=lease_seconds
        )
        self.workflows: SqlWorkflows = SqlWorkflows(self.database)
        self.executions: SqlExecutions = SqlExecutions(self.database)
        self.commit_at_once = self.executions.at_once
        # Replicas wake each other (signals, Watch streams): LISTEN/NOTIFY, or polling.
        self.notifications: Notifications = self.database.notification_channel()
        self._machines: SqlMachineStore | None = None

    async def workflow_version(
        self, tenant: str, name: str, version: int | None = None
    ) -> int | None:
        return await self.workflows.workflow_version(tenant, name, version)

    @property
    def dialect(self) -> str:
        return self.database.dialect

    def create_execution_soon(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> asyncio.Future[tuple[ExecutionRecord, bool]]:
        """The group commit's own future for the creation (no task: `Store` has the why)."""
        return self.executions.create_soon(record, nodes, events)

    @property
    def writer(self) -> GroupCommit[Any]:
        """The executions' group commit (tests and benchmarks count its groups)."""
        return self.executions.writer

    @property
    def instances(self) -> SqlMachineStore:
        if self._machines is None:
            self._machines = SqlMachineStore(self.database)
        return self._machines

    @property
    def busy_timeout_ms(self) -> int:
        """How long a SQLite write waits for another process's write lock before StoreError."""
        return self.database.busy_timeout_ms

    @busy_timeout_ms.setter
    def busy_timeout_ms(self, value: int) -> None:
        self.database.busy_timeout_ms = value

    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        """A signal stored here is its caller's to hand over (Engine.add_signal gives it to
        the run or calls `notify`): the notifications need not announce it here again."""
        stored, created = await self.executions.add_signal(signal)
        if created:
            self.notifications.stored_here(stored.execution_id, stored.seq)
        return stored, created

    async def restore_reads(
        self, execution_ids: Sequence[str]
    ) -> dict[str, tuple[list[NodeRecord], list[SignalRecord]]]:
        return await self.executions.restore_reads(execution_ids)

    async def restore_read(
        self, execution_id: str
    ) -> tuple[ExecutionRecord, list[NodeRecord], list[SignalRecord]] | None:
        return await self.executions.restore_read(execution_id)

    # Lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        if not await self.database.open():
            return
        self.executions.writer.start()
        self.notifications.start()

    async def close(self) -> None:
        if self.database.closing or not self.database.is_open:
            return
        self.database.closing = True
        await self.notifications.close()
        if self._machines is not None:
            await self._machines.close()
        await self.executions.writer.close()
        await self.database.dispose()
