"""Wake-ups for the worker machinery, in this process and on the other replicas.

`ring(kind, key)` tells this process's listeners at once and the other replicas through the
store's notification channel (PostgreSQL NOTIFY; nothing on SQLite and memory, which have one
server process), coalescing keys rung while a notification is on its way. The kinds:
`wcall` (a READY call for the tool `key`: dispatchers look), `wdone` (the call `key` ended or
was cancelled: its caller reads it, its worker's replica withdraws it) and `wtools` (remote
tool declarations changed: catalogs reload). Every listener also looks on its own at a
bounded interval, so a lost notification delays, never loses, work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agentrun.storage.base import Store

log = logging.getLogger("agentrun.integrations.workers")

KINDS = ("wcall", "wdone", "wtools")
# Keys per NOTIFY payload, well under PostgreSQL's 8000-byte limit.
_CHUNK = 100

Listener = Callable[[str, str], None]


class Bell:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._listeners: list[Listener] = []
        self._pending: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Hears the other replicas (the store's channel)."""
        self._store.listen(self._heard)

    def _heard(self, kind: str, key: str) -> None:
        if kind in KINDS:
            self._tell(kind, key)

    def _tell(self, kind: str, key: str) -> None:
        for listener in self._listeners:
            try:
                listener(kind, key)
            except Exception:
                log.exception("a worker wake-up listener failed")

    def ring(self, kind: str, key: str, *, remote: bool = True) -> None:
        """Tells this process now and, unless `remote` is False, the other replicas soon."""
        self._tell(kind, key)
        if not remote:
            return
        self._pending.setdefault(kind, set()).add(key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._send(), name="agentrun-workers-notify"
            )

    async def _send(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, {}
                for kind, keys in pending.items():
                    ordered = sorted(keys)
                    for start in range(0, len(ordered), _CHUNK):
                        try:
                            await self._store.notify(
                                kind, ",".join(ordered[start : start + _CHUNK])
                            )
                        except Exception as exc:
                            log.warning("could not tell other replicas (%s): %r", kind, exc)
        finally:
            self._task = None

    async def close(self) -> None:
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
