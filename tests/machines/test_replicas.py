"""Two engines (two replicas) over one database: an engine whose copy of an instance is stale
has its commit refused by the history's keys, reloads, and handles the event on what is
stored; an event id applied by one replica is applied once by the other."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentrun.engine.errors import Unavailable
from tests.machines.conftest import close, history_longer_than, make, open_backend, until

COUNTER = """
name: counter
mode: state_machine
initial: on
data: {n: 0}
states:
  on:
    on:
      ADD: {target: on, assign: {n: "${{ data.n + event.data.k }}"}}
      STOP: off
  off: {final: true}
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_stale_replicas_reload_and_apply_each_event_once(backend: str, tmp_path: Any) -> None:
    store_a = await open_backend(backend, tmp_path)
    store_b = await open_backend(backend, tmp_path)
    a, b = await make(store_a), await make(store_b)
    try:
        name = f"counter-{uuid.uuid4().hex[:8]}"
        await a.define(COUNTER.replace("name: counter", f"name: {name}"))
        inst = await a.machines.create_instance(name)
        # Both replicas hold the instance in memory.
        await a.machines.send_event(inst.id, "ADD", {"k": 1}, event_id="a1")
        await b.machines.send_event(inst.id, "ADD", {"k": 10}, event_id="b1")
        # `a` is stale now (it does not know b1): its next event is refused, reloaded, redone.
        rec, entry = await a.machines.send_event(inst.id, "ADD", {"k": 100}, event_id="a2")
        assert rec.data["n"] == 111 and entry.sequence == 4
        # An id applied by `b` is answered, not applied again, by `a`.
        _, again = await a.machines.send_event(inst.id, "ADD", {"k": 10}, event_id="b1")
        assert again.sequence == 3

        # Interleaved senders on both replicas: every event applied once, in some order. A
        # sender told UNAVAILABLE ("too many concurrent writers; retry") retries with the same
        # id, as the API asks; however often that happens, each event counts once.
        async def send(engine: Any, n: int) -> None:
            for _ in range(50):
                try:
                    await engine.machines.send_event(inst.id, "ADD", {"k": 1000}, event_id=f"x{n}")
                    return
                except Unavailable:
                    await asyncio.sleep(0.01)
            raise AssertionError(f"x{n} was never applied")

        await asyncio.gather(*(send(a if n % 2 else b, n) for n in range(20)))
        final = await b.machines.get_instance(inst.id)
        history = await b.machines.list_history(inst.id)
        assert final.data["n"] == 111 + 20 * 1000
        assert [e.sequence for e in history] == list(range(1, 25))
        assert len({e.event_id for e in history[1:]}) == 23
    finally:
        await close(a)
        await close(b)
        await store_a.close()
        await store_b.close()


EXPIRING = """
name: {name}
mode: state_machine
initial: waiting
states:
  waiting:
    on: {{PING: waiting, STOP: expired}}
    after: {{300ms: {{target: expired, guard: "${{{{ state == 'waiting' }}}}"}}}}
  expired: {{final: true}}
"""


async def test_a_timer_whose_replica_died_is_fired_by_another(tmp_path: Any) -> None:
    from agentrun.engine import Engine
    from agentrun.engine.machine import MachineEngine
    from agentrun.storage.machines import EntryKind

    store_a = await open_backend("sqlite", tmp_path)
    store_b = await open_backend("sqlite", tmp_path)
    a = await make(store_a)
    b = await make(store_b)
    # `b` sweeps often; it started before the instance existed, so it armed nothing.
    await b.machines.stop()
    b.machines = MachineEngine(b.engine, sweep_interval=0.1)
    await b.machines.start()
    assert isinstance(b.engine, Engine)
    try:
        name = f"exp-{uuid.uuid4().hex[:8]}"
        await a.define(EXPIRING.format(name=name))
        inst = await a.machines.create_instance(name)
        await a.machines.stop()  # "dies": its timer handle is gone, the row stays
        final = await b.machines.wait_final(inst.id, timeout=30)
        assert final.current == "expired"
        history = await b.machines.list_history(inst.id)
        assert [e.kind for e in history] == [EntryKind.CREATED, EntryKind.TRANSITION]
        assert await b.machines.store.list_timers() == []
    finally:
        await close(a)
        await close(b)
        await store_a.close()
        await store_b.close()


async def test_a_timer_fired_twice_is_applied_once(tmp_path: Any) -> None:
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        name = f"exp-{uuid.uuid4().hex[:8]}"
        await h.define(
            EXPIRING.format(name=name).replace("target: expired, guard", "target: waiting, guard")
        )
        inst = await h.machines.create_instance(name)
        (timer,) = await h.machines.store.list_timers(instance_id=inst.id)
        # The handle fires, and a sweep arms the same row again before the first commit.
        h.machines.timers.fire(timer)
        h.machines.timers.fire(timer)
        await until(lambda: history_longer_than(h, inst.id, 1))  # one firing is applied
        await asyncio.sleep(0.3)  # a second application would be committed by now
        history = await h.machines.list_history(inst.id)
        assert [e.event for e in history] == ["create", "after:300ms"]
    finally:
        await close(h)
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_watch_through_another_replica_gets_every_entry_and_ends(
    backend: str, tmp_path: Any
) -> None:
    """Issue 14: WatchInstance on a replica that does not drive the instance got the stored
    backlog and then waited for ever (the machine engine had a hub of its own that no
    notification reached). Now instances share the engine's hub and its NOTIFY path. On
    SQLite the poller reads the watched instances' sequences (the engine tells the store
    which it follows, `Store.watch`)."""
    store_a = await open_backend(backend, tmp_path)
    store_b = await open_backend(backend, tmp_path)
    a, b = await make(store_a), await make(store_b)
    try:
        name = f"counter-{uuid.uuid4().hex[:8]}"
        await a.define(COUNTER.replace("name: counter", f"name: {name}"))
        inst = await a.machines.create_instance(name)
        seen: list[int] = []

        async def watch() -> None:
            async for entry in b.machines.watch(inst.id):
                seen.append(entry.sequence)

        watcher = asyncio.get_running_loop().create_task(watch())
        await until(lambda: seen == [1])
        await a.machines.send_event(inst.id, "ADD", {"k": 1})
        await a.machines.send_event(inst.id, "STOP")
        async with asyncio.timeout(30):
            await watcher
        assert seen == [1, 2, 3]
    finally:
        await close(a)
        await close(b)
        await store_a.close()
        await store_b.close()
