"""Claiming leased work in pages by id: what a replica takes back at start (executions and
state machine instances alike), page after page, each page handled before the next is read.

The pages move on by id, not by "claim until a page comes back short": a restart claims its
own rows too (`include_own`), and the rows it has just claimed are its own, so they match
again; a loop that asked for the next batch without an `after_id` took the first batch back
for ever once a replica held a full batch (a server with 100 state machine instances waiting
on timers never finished starting). Handling each page before the next is read lets the first
runs work again while the rest are still being claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_Keyed)


async def claim_in_pages(
    claim: Callable[[int, str | None], Awaitable[list[R]]],
    take: Callable[[list[R]], Awaitable[None]],
    *,
    first: int,
    size: int,
    going: Callable[[], bool] = lambda: True,
    lock: asyncio.Lock | None = None,
) -> int:
    """Calls `claim(limit, after_id)` for pages of `first`, then `size`, rows, and `take` on
    each, until a page comes back short or `going()` turns false; returns how many rows.
    `lock` is held by each `claim`, not by `take` (the replica's renewals take it too)."""
    after: str | None = None
    limit = first
    total = 0
    while going():
        if lock is None:
            page = await claim(limit, after)
        else:
            async with lock:
                page = await claim(limit, after)
        total += len(page)
        await take(page)
        if len(page) < limit:
            break
        after = max(record.id for record in page)
        limit = size
    return total
