"""gRPC helpers for the tests that drive `agentrun serve` replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from agentrun.client import AsyncClient
from agentrun.client.errors import AgentrunError

# A replica killed mid-call: the call is retried (on another replica), its request id makes
# the retry harmless.
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


async def create_workflow(addresses: Sequence[str], source: str) -> None:
    for attempt in range(20):
        address = addresses[attempt % len(addresses)]
        async with AsyncClient(address, timeout=10) as client:
            try:
                await client.create_workflow(source=source)
                return
            except AgentrunError as exc:
                if exc.code.name not in RETRYABLE or attempt == 19:
                    raise
        await asyncio.sleep(0.2)


async def start_executions(
    addresses: Sequence[str],
    workflow: str,
    count: int,
    *,
    prefix: str = "job",
    concurrency: int = 20,
) -> list[str]:
    """Starts `count` executions spread over the replicas (request ids `prefix-i`, retried on
    another replica when one is unavailable); their ids in order."""
    clients = [AsyncClient(a, timeout=10) for a in addresses]
    gate = asyncio.Semaphore(concurrency)
    try:

        async def one(i: int) -> str:
            async with gate:
                for attempt in range(30):
                    client = clients[(i + attempt) % len(clients)]
                    try:
                        ex = await client.start_execution(
                            workflow, {"job": i}, request_id=f"{prefix}-{i}"
                        )
                        return ex.id
                    except AgentrunError as exc:
                        if exc.code.name not in RETRYABLE or attempt == 29:
                            raise
                    await asyncio.sleep(0.1)
                raise AssertionError("unreachable")

        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.close()


def status_code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    return code() if callable(code) else code
