"""Claiming leased work in pages by id: what a replica takes back at start (executions and
state machine instances alike), page after page, each page handled before the next is read.

The pages move on by id, not by "claim until a page comes back short": a restart claims its
own rows too (`include_own`), and the rows it has just claimed are its own, so they match
again; a loop that asked for the next batch without an `after_id` took the first batch back
for ever once a replica held a full batch (a server with 100 state machine instances waiting
on timers never finished starting). Handling each page before the next is read lets the first
runs work again while the rest are still being claimed.

On PostgreSQL a page skips a row another transaction locked (FOR UPDATE SKIP LOCKED) and the
next page moves on past its id, so a restart reads the ids it holds before its pages and
claims those the pages did not take again, by id (`retake`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container
from typing import Protocol, TypeVar


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_Keyed)

# The first wait before `retake` claims (then twice as long each time, up to its `longest`).
RETAKE_DELAY = 0.05


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


async def claim_own_in_pages(
    claim: Callable[[int, str | None], Awaitable[list[R]]],
    take: Callable[[list[R]], Awaitable[None]],
    *,
    held: Callable[[], Awaitable[set[str]]],
    first: int,
    size: int,
    lock: asyncio.Lock,
    what: str,
    log: logging.Logger,
    going: Callable[[], bool] = lambda: True,
) -> tuple[int, set[str] | None]:
    """A restart's claim of its own rows (and others' expired ones): `claim_in_pages`, with
    the ids this replica `held()` read before the pages, so that it knows which of them the
    pages skipped (see the module's docstring). Returns how many rows the pages took and the
    skipped ids, for `retake` (None: `held()` failed, so they are unknown; logged, `what`:
    the rows' name). Only rows held before the pages count: one made here meanwhile (a child
    of a resumed run) is not the restart's to claim."""
    try:
        before: set[str] | None = await held()
    except Exception:
        log.warning("could not read this replica's %s before claiming", what, exc_info=True)
        before = None
    claimed: set[str] = set()

    async def tracked(page: list[R]) -> None:
        claimed.update(record.id for record in page)
        await take(page)

    total = await claim_in_pages(claim, tracked, first=first, size=size, going=going, lock=lock)
    return total, None if before is None else before - claimed


async def retake(
    skipped: set[str],
    *,
    held: Callable[[], Awaitable[set[str]]],
    here: Callable[[], Container[str]],
    claim: Callable[[list[str]], Awaitable[list[R]]],
    take: Callable[[list[R]], Awaitable[None]],
    lock: asyncio.Lock,
    longest: float,
    delay: float = RETAKE_DELAY,
    what: str,
    log: logging.Logger,
    going: Callable[[], bool] = lambda: True,
) -> None:
    """Claims, by id, this replica's rows of `skipped` that a restart's pages did not take
    (see the module's docstring), after `delay`, then twice as long each time up to `longest`,
    until none is left: each is taken, no longer among those it `held()`s (finished, or
    another's), or `here()` (driven here already: claiming it again would bump its epoch under
    it). `skipped` is updated in place. `lock` is held by each `claim`, not by `take`;
    a failed round is logged (`what`: the rows' name) and tried again."""
    while skipped and going():
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)
        try:
            holding = await held()
            async with lock:
                skipped.intersection_update(holding)
                running = here()
                skipped.difference_update([i for i in skipped if i in running])
                if not skipped or not going():
                    continue
                taken = await claim(sorted(skipped))
            skipped.difference_update(record.id for record in taken)
            if taken:
                log.info("claimed %d %s the start skipped", len(taken), what)
            await take(taken)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("claiming this replica's skipped %s failed", what, exc_info=True)
