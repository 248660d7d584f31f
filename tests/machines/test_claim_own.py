"""A replica restarted under its id takes back every instance it held, however many: the
start's claim of its own instances moves on by id (with `include_own` the rows it just
claimed are its own and match again; a batch-until-short loop claimed the first batch
forever once a replica held a full batch of driven instances)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentrun.engine.machine.leases import CLAIM_BATCH
from tests.machines.conftest import close, make, open_backend

pytestmark = pytest.mark.timeout(120)

TIMED = """
name: {name}
mode: state_machine
initial: waiting
states:
  waiting:
    after: {{1h: done}}
  done: {{final: true}}
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_restart_takes_back_more_than_a_batch_of_its_own_instances(
    backend: str, tmp_path: Any
) -> None:
    replica = f"r-{uuid.uuid4().hex[:8]}"
    name = f"timed-{uuid.uuid4().hex[:8]}"
    count = CLAIM_BATCH + CLAIM_BATCH // 2
    store = await open_backend(backend, tmp_path)
    first = await make(store, replica=replica)
    await first.define(TIMED.format(name=name))
    ids = {(await first.machines.create_instance(name)).id for _ in range(count)}
    await close(first)
    await store.close()

    store = await open_backend(backend, tmp_path)
    claims = 0
    claim = store.instances.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        assert claims <= 10, "the start's claim does not move on"
        return await claim(*args, **kwargs)

    store.instances.claim = counted
    second = await asyncio.wait_for(make(store, replica=replica), 60)
    try:
        assert ids <= second.machines.leases.held_ids()
    finally:
        await close(second)
        await store.close()
