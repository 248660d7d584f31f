"""Tools served by remote workers in any language (docs/workers.md).

`Workers` is the machinery of one replica: the catalog that installs remote tools in the
engine's registry, the caller's side (`RemoteCalls`: a node's call becomes a row and waits),
the workers' side (`WorkerHub`: sessions, dispatch, leases, fencing), and the bell that wakes
them across replicas. The server's WorkerService is a thin adapter over `Workers.hub`.

    workers = Workers(store, registry, replica="a", config=WorkersConfig.from_mapping(...))
    await workers.start()     # after store.open(); before the engine resumes executions
    ...
    await workers.stop()      # before store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from agentrun.integrations.registry import Registry
from agentrun.integrations.workers.bell import Bell
from agentrun.integrations.workers.calls import RemoteCalls
from agentrun.integrations.workers.catalog import Catalog, Registration, RemoteTool, ToolSpec
from agentrun.integrations.workers.hub import Cancel, Refused, Session, WorkerHub
from agentrun.integrations.workers.settings import WorkersConfig
from agentrun.storage.base import Store
from agentrun.storage.records import NodeRecord, NodeState
from agentrun.storage.worker_calls import CallRecord, WorkerCallStore, worker_calls_for

__all__ = [
    "CallRecord",
    "Cancel",
    "Refused",
    "Registration",
    "RemoteTool",
    "Session",
    "ToolSpec",
    "WorkerHub",
    "Workers",
    "WorkersConfig",
]

log = logging.getLogger("agentrun.integrations.workers")


class Workers:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        replica: str,
        config: WorkersConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or WorkersConfig()
        self.repo: WorkerCallStore = worker_calls_for(store)
        self.bell = Bell(store)
        self.calls = RemoteCalls(self.repo, self.bell, self.config, replica, clock=clock)
        self.catalog = Catalog(registry, self.repo, self.calls)
        self.hub = WorkerHub(self.repo, self.bell, self.catalog, self.config, replica, clock=clock)
        self._refreshing: asyncio.Task[None] | None = None
        self._reloads: asyncio.Task[None] | None = None
        self._again = False
        self.bell.listen(self._heard)

    async def start(self) -> None:
        """Installs the stored remote tools (so that executions resumed now find them) and
        starts listening and dispatching. The store must be open."""
        await self.catalog.refresh()
        self.bell.start()
        self.calls.start()
        self.hub.start()
        self._reloads = asyncio.get_running_loop().create_task(
            self._reload_loop(), name="agentrun-workers-reload"
        )

    async def _reload_loop(self) -> None:
        """Reloads the catalog every 5 polls too: a `wtools` notification lost while a
        replica's LISTEN connection was down delays a new tool here, never hides it."""
        while True:
            await asyncio.sleep(5 * self.config.poll)
            self._heard("wtools", "")

    def _heard(self, kind: str, key: str) -> None:
        if kind != "wtools":
            return
        self._again = True
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(
                self._refresh(), name="agentrun-workers-catalog"
            )

    async def _refresh(self) -> None:
        try:
            while self._again:  # declarations made while one reload ran: another
                self._again = False
                try:
                    await self.catalog.refresh()
                except Exception as exc:
                    log.warning("could not reload remote tools: %r", exc)
        finally:
            self._refreshing = None

    async def show_waiting(self, execution_id: str, nodes: list[NodeRecord]) -> list[NodeRecord]:
        """`nodes` with those whose call waits for a worker (READY calls: no worker serving the
        tool with its labels has a free slot, or none is connected) shown READY."""
        waiting = set()
        for call in await self.repo.waiting(execution_id):
            key = call.idempotency_key.removeprefix(f"{execution_id}/").rsplit("/", 1)[0]
            node, _, index = key.partition("/")
            waiting.add(f"{node}[{index}]" if index.isdigit() else node)
        if not waiting:
            return nodes
        return [
            dataclasses.replace(n, state=NodeState.READY)
            if n.node_id in waiting and n.state is NodeState.RUNNING
            else n
            for n in nodes
        ]

    def drain(self) -> None:
        """Sends no more calls to workers (the server is stopping); their answers still count."""
        self.hub.drain()

    async def stop(self) -> None:
        """Ends every session (their calls are lost: other replicas' workers take the next
        attempts) and stops waiting; the store must still be open."""
        await self.hub.stop()
        await self.calls.stop()
        await self.repo.close()
        for task in (self._reloads, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.bell.close()
