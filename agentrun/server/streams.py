"""Server streams that end when the server drains or the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


async def until_stopped(events: AsyncIterator[Any], stop: asyncio.Event) -> AsyncIterator[Any]:
    """Yields from `events` until they end or `stop` is set; a cancelled caller (the client
    went away) cancels the pending read, so the engine's subscription is released."""
    if stop.is_set():
        return
    stopper = asyncio.ensure_future(stop.wait())
    iterator = aiter(events)
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(iterator))
            await asyncio.wait((step, stopper), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        stopper.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
