"""The harness's stall check sees a loop that computes without yielding, and only that."""

from __future__ import annotations

import asyncio
import time

from tests.security.conftest import Harness


def test_a_loop_computing_without_yielding_is_seen(harness: Harness) -> None:
    async def compute(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    harness.server.take_busy()
    harness.server.run_coro(compute(0.3))
    harness.server.run_coro(asyncio.sleep(0.1))  # the monitor's wake-up, due since, has run
    assert harness.server.take_busy() >= 0.25


def test_a_loop_that_waits_is_not_busy(harness: Harness) -> None:
    harness.server.take_busy()
    harness.server.run_coro(asyncio.sleep(0.5))
    assert harness.server.take_busy() < 0.25
