"""Cross-replica announcements of commits that the store itself does not announce.

A DAG run's events are announced by the store in the commit's own transaction (PostgreSQL's
`pg_notify`, SQLite's rowid polling). A state machine instance's history entries go through
the same notification channel from here, after their commit: `Engine._on_notification`
pokes the one `Hub` both interpreters publish on, and a Watch stream on any replica re-reads
the store. Announcements are coalesced: ids committed while one is on its way go in the next,
so a burst of commits costs one round trip."""

from __future__ import annotations

import asyncio
import logging

from agentrun.storage.base import Store

log = logging.getLogger("agentrun.engine")

# Ids per NOTIFY payload, well under PostgreSQL's 8000-byte limit for ids of ~40 characters.
CHUNK = 100


class Notifier:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def announce(self, key: str) -> None:
        """`key` (an execution or instance id) has new committed entries."""
        self._ids.add(key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._send(), name="agentrun-notify"
            )

    async def _send(self) -> None:
        try:
            while self._ids:
                ids = sorted(self._ids)
                self._ids.clear()
                for start in range(0, len(ids), CHUNK):
                    try:
                        await self._store.notify("events", ",".join(ids[start : start + CHUNK]))
                    except Exception as exc:
                        log.warning("could not announce commits to other replicas: %r", exc)
        finally:
            self._task = None

    async def close(self) -> None:
        """Sends what is pending (the store must still be open)."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
