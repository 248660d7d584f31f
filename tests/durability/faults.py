"""A Store wrapper that makes calls fail at random with StoreError, as a database that drops
connections would (Temporal's CI runs its suites over such a persistence layer).

A failure is injected either *before* the call (nothing happened) or, for writes, *after* it
(the write happened but the caller saw an error: the connection died while COMMIT's answer was
on its way). Callers cannot tell the two apart, so the engine must treat every StoreError as
"maybe written" and rebuild from the store.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from agentrun.storage.base import Store, StoreError
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    NodeRecord,
    SignalRecord,
    WorkflowRecord,
)

WRITES = frozenset(
    {
        "create_workflow",
        "delete_workflow",
        "create_execution",
        "commit",
        "claim_executions",
        "renew_leases",
        "release_leases",
        "add_signal",
    }
)


class ProxyStore(Store):
    """Delegates every call to `inner` through `_call`, which subclasses override."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.inner, name)(*args, **kwargs)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    def listen(self, callback: Callable[[str, str], None]) -> None:
        self.inner.listen(callback)

    def watch(self, keys: Callable[[], Collection[str]]) -> None:
        self.inner.watch(keys)

    async def notify(self, kind: str, execution_id: str) -> None:
        await self._call("notify", kind, execution_id)

    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        return await self._call("create_workflow", record)

    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        return await self._call(
            "get_workflow", tenant, name, version, include_deleted=include_deleted
        )

    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        return await self._call("list_workflows", tenant, limit=limit, after_name=after_name)

    async def delete_workflow(self, tenant: str, name: str) -> bool:
        return await self._call("delete_workflow", tenant, name)

    async def create_execution(
        self,
        record: ExecutionRecord,
        nodes: Sequence[NodeRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> tuple[ExecutionRecord, bool]:
        return await self._call("create_execution", record, nodes, events)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return await self._call("get_execution", execution_id)

    async def list_executions(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[Any] = (),
    ) -> list[ExecutionRecord]:
        return await self._call(
            "list_executions",
            tenant,
            limit=limit,
            after_id=after_id,
            workflow=workflow,
            states=states,
        )

    async def list_waits(
        self,
        tenant: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> list[NodeRecord]:
        return await self._call(
            "list_waits", tenant, limit=limit, after=after, execution_id=execution_id
        )

    async def list_unfinished_executions(self) -> list[ExecutionRecord]:
        return await self._call("list_unfinished_executions")

    async def get_nodes(self, execution_id: str) -> list[NodeRecord]:
        return await self._call("get_nodes", execution_id)

    async def commit(self, batch: Batch) -> None:
        await self._call("commit", batch)

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
        return await self._call(
            "claim_executions",
            owner,
            lease_seconds=lease_seconds,
            now=now,
            limit=limit,
            include_own=include_own,
            after_id=after_id,
            ids=ids,
        )

    async def held_executions(self, owner: str) -> set[str]:
        return await self._call("held_executions", owner)

    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        return await self._call("renew_leases", owner, lease_seconds=lease_seconds, now=now)

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        await self._call("release_leases", owner, execution_ids)

    async def next_lease_expiry(self, owner: str) -> float | None:
        return await self._call("next_lease_expiry", owner)

    async def maintain_events(self, *, now: float, retention_seconds: float | None) -> int:
        return await self._call("maintain_events", now=now, retention_seconds=retention_seconds)

    async def list_events(
        self, execution_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        return await self._call(
            "list_events", execution_id, after_sequence=after_sequence, limit=limit
        )

    async def add_signal(self, signal: SignalRecord) -> tuple[SignalRecord, bool]:
        return await self._call("add_signal", signal)

    async def pending_signals(self, execution_id: str) -> list[SignalRecord]:
        return await self._call("pending_signals", execution_id)

    async def get_signal(self, execution_id: str, signal_id: str) -> SignalRecord | None:
        return await self._call("get_signal", execution_id, signal_id)


class FaultyStore(ProxyStore):
    """Fails `rate` of the calls with StoreError; `after_share` of the failed writes fail
    after the write was made. `enabled` turns injection off (e.g. for the test's own reads)."""

    def __init__(
        self,
        inner: Store,
        *,
        rate: float = 0.005,
        after_share: float = 0.5,
        seed: int | None = None,
        methods: frozenset[str] | None = None,
    ) -> None:
        super().__init__(inner)
        self.rate = rate
        self.after_share = after_share
        self.rng = random.Random(seed)
        self.methods = methods
        self.enabled = True
        self.calls: Counter[str] = Counter()
        self.injected: Counter[tuple[str, str]] = Counter()
        # Executions whose create_execution was written but reported failed.
        self.ambiguous_starts: set[str] = set()

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        inject = (
            self.enabled
            and (self.methods is None or name in self.methods)
            and self.rng.random() < self.rate
        )
        if not inject:
            return await super()._call(name, *args, **kwargs)
        if name in WRITES and self.rng.random() < self.after_share:
            result = await super()._call(name, *args, **kwargs)
            self.injected[(name, "after")] += 1
            if name == "create_execution":
                self.ambiguous_starts.add(args[0].id)
            del result
            raise StoreError(f"injected: connection lost after {name}")
        self.injected[(name, "before")] += 1
        await asyncio.sleep(0)
        raise StoreError(f"injected: connection lost before {name}")
