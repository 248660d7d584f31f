"""Opens the store a URL names, so that server, CLI and tests agree on what a URL means.

Users write the URLs they know (`postgresql://...`, `sqlite:///path`); the async drivers the
store needs are an implementation detail, filled in here. SQLAlchemy is imported only for a SQL
URL: a process on the memory store never loads it (~30 MiB of RSS).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agentrun.storage.base import Store

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

ENV_VAR = "AGENTRUN_DATABASE_URL"
DEFAULT_URL = "sqlite+aiosqlite:///./.agentrun/agentrun.db"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
}


def resolve_url(url: str | None = None) -> str:
    """The async-driver URL for `url`, `$AGENTRUN_DATABASE_URL`, or the default SQLite file.

    "memory" is returned as is. A `?synchronous=NORMAL` query on a SQLite URL is kept for
    `open_store`, which passes it to SqlStore.
    """
    if url is None:
        url = os.environ.get(ENV_VAR)
    if not url:
        return DEFAULT_URL
    if url == "memory":
        return url
    parsed = _parse(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


async def open_store(url: str | None = None, *, lease_seconds: float | None = None) -> Store:
    """Builds and opens the store; raises StoreError if the database cannot be reached."""
    store = make_store(url, lease_seconds=lease_seconds)
    await store.open()
    return store


def make_store(url: str | None = None, *, lease_seconds: float | None = None) -> Store:
    """The store `url` names, not yet opened (`serve` binds its port before it opens one).
    `lease_seconds`: the lease its replicas keep (SqlStore bounds idle transactions by it)."""
    resolved = resolve_url(url)
    store: Store
    if resolved == "memory":
        from agentrun.storage.memory import MemoryStore

        store = MemoryStore()
    else:
        from agentrun.storage.sql import SqlStore

        parsed = _parse(resolved)
        synchronous = parsed.query.get("synchronous", "FULL")
        if isinstance(synchronous, tuple):
            synchronous = synchronous[-1]
        parsed = parsed.difference_update_query(["synchronous"])
        store = SqlStore(
            parsed.render_as_string(hide_password=False),
            synchronous=synchronous,
            lease_seconds=lease_seconds,
        )
    return store


def _parse(url: str) -> URL:
    import sqlalchemy as sa

    return sa.make_url(url)
