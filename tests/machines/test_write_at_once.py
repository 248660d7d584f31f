"""On SQLite an event that calls nothing is written at once by `send_event` itself
(`MachineStore.write_at_once`) when the store's group commit would write it alone on the loop's
thread anyway: no `submit`, no future, no coroutine of the instance loop. When it cannot be (the
loop has other work, a stale copy, a refused batch), nothing is written and the event takes the
usual way: applied once all the same. The memory store writes every event at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine.machine import MachineEngine
from agentrun.storage import sqlite_writes
from agentrun.storage.memory import MemoryStore
from tests.machines.conftest import close, make, open_backend

COUNTER = """
name: counter
mode: state_machine
initial: on
data: {n: 0}
states:
  on:
    on:
      ADD: {target: on, assign: {n: "${{ data.n + event.data.k }}"}}
"""


@pytest.fixture(autouse=True)
def _quick_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine's slow commits would send writes to the writer thread for a while
    (INLINE_SLOW_SECONDS): these tests are about the path, not the disk."""
    monkeypatch.setattr(sqlite_writes, "INLINE_MAX_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_writes, "INLINE_SLOW_SECONDS", 3600.0)


def _count_submits(machines: MachineEngine) -> list[Any]:
    submitted: list[Any] = []
    loop = machines.loop
    submit = loop._submit
    assert submit is not None

    def counting(batch: Any) -> Any:
        submitted.append(batch)
        return submit(batch)

    loop._submit = counting
    return submitted


async def test_an_event_is_written_at_once_without_submit(tmp_path: Any) -> None:
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        await h.define(COUNTER)
        assert h.machines.write_at_once is not None
        inst = await h.machines.create_instance("counter")
        submitted = _count_submits(h.machines)
        groups = store.instances.groups
        for k in range(1, 6):
            await asyncio.sleep(0.05)  # an idle loop (its other work done): written at once
            record, entry = await h.machines.send_event(inst.id, "ADD", {"k": k})
            assert entry.sequence == k + 1
        assert record.data == {"n": 15}
        # None through `submit` (one, on a loaded machine, where a background task of the
        # engine had work ready on the loop just then: the group commit's way).
        assert len(submitted) <= 1, submitted
        assert store.instances.groups - groups == 5  # one transaction each, as before
        stored = await store.instances.get_instance(inst.id)
        assert stored is not None and stored.data == {"n": 15} and stored.last_sequence == 6
    finally:
        await close(h)
        await store.close()


async def test_an_event_not_written_at_once_takes_the_usual_way(tmp_path: Any) -> None:
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        await h.define(COUNTER)
        inst = await h.machines.create_instance("counter")
        submitted = _count_submits(h.machines)
        refused: list[Any] = []

        def refuse(batch: Any) -> bool:
            refused.append(batch)
            return False

        h.machines.write_at_once = refuse
        for k in range(1, 4):
            await h.machines.send_event(inst.id, "ADD", {"k": k}, event_id=f"e{k}")
        assert len(refused) == 3 and len(submitted) == 3
        again, _ = await h.machines.send_event(inst.id, "ADD", {"k": 1}, event_id="e1")
        history = await store.instances.list_history(inst.id)
        assert [e.event_id for e in history] == [None, "e1", "e2", "e3"]  # each once
        assert again.data == {"n": 1}  # the first result, repeated
        stored = await store.instances.get_instance(inst.id)
        assert stored is not None and stored.data == {"n": 6}
    finally:
        await close(h)
        await store.close()


async def test_an_event_not_written_at_once_is_computed_once(tmp_path: Any) -> None:
    """The event the store did not write at once is committed the usual way with the work
    `send_event` computed: its step is not taken a second time (guards, assigns and the
    entry's time computed once), with ids and queued senders as `dispatch` has them."""
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        await h.define(COUNTER)
        inst = await h.machines.create_instance("counter")
        stepper = h.machines.stepper
        steps: list[Any] = []
        quick = stepper.quick

        def counting(*args: Any) -> Any:
            steps.append(args[2])
            return quick(*args)

        stepper.quick = counting  # type: ignore[method-assign]
        h.machines.write_at_once = lambda batch: False
        for k in range(1, 4):
            await h.machines.send_event(inst.id, "ADD", {"k": k}, event_id=f"e{k}")
        assert steps == ["ADD"] * 3
        # A repeat while the first is being written waits for its outcome; a sender that
        # finds the instance busy queues behind it: each applied once, in order.
        first = asyncio.ensure_future(
            h.machines.send_event(inst.id, "ADD", {"k": 10}, event_id="e4")
        )
        await asyncio.sleep(0)
        repeat = h.machines.send_event(inst.id, "ADD", {"k": 10}, event_id="e4")
        behind = h.machines.send_event(inst.id, "ADD", {"k": 100}, event_id="e5")
        results = await asyncio.gather(first, repeat, behind)
        assert [r[0].data for r in results] == [{"n": 16}, {"n": 16}, {"n": 116}]
        history = await store.instances.list_history(inst.id)
        assert [e.event_id for e in history] == [None, "e1", "e2", "e3", "e4", "e5"]
        stored = await store.instances.get_instance(inst.id)
        assert stored is not None and stored.data == {"n": 116}
        assert not h.machines.instances[inst.id].busy
    finally:
        await close(h)
        await store.close()


async def test_a_postgresql_store_writes_nothing_at_once(tmp_path: Any) -> None:
    store = await open_backend("postgresql", tmp_path)
    try:
        assert store.instances.write_at_once is None
    finally:
        await store.close()


async def test_a_memory_store_writes_every_event_at_once() -> None:
    """Memory's `write_at_once` writes every batch (True): `send_event` commits there without
    the store's `commit` coroutine, by the same branch as SQLite's writes at once. A batch its
    fence refuses (another replica took the lease) raises LeaseLost, as `commit` would: nothing
    written, the instance let go, and the event handled on it reloaded, written once."""
    store = MemoryStore()
    h = await make(store)
    try:
        await h.define(COUNTER)
        inst = await h.machines.create_instance("counter")
        machine_store = store.instances
        assert machine_store.write_at_once is not None
        commits: list[Any] = []
        commit = machine_store.commit

        async def counting_commit(batch: Any) -> None:
            commits.append(batch)
            await commit(batch)

        machine_store.commit = counting_commit  # type: ignore[method-assign]
        at_once = h.machines.write_at_once
        assert at_once is not None
        tried: list[Any] = []

        def counting_at_once(batch: Any) -> bool:
            tried.append(batch)
            written = at_once(batch)
            assert written is True
            return written

        h.machines.write_at_once = counting_at_once
        for k in range(1, 4):
            record, entry = await h.machines.send_event(inst.id, "ADD", {"k": k})
            assert entry.sequence == k + 1
        assert record.data == {"n": 6}
        assert len(tried) == 3 and commits == []

        gone: list[str] = []
        let_go = h.machines.leases.let_go

        def counting_let_go(instance_id: str, why: str) -> None:
            gone.append(why)
            let_go(instance_id, why)

        h.machines.leases.let_go = counting_let_go  # type: ignore[method-assign]
        taken = await machine_store.acquire(
            inst.id, "another-replica", lease_seconds=60, now=h.machines.clock(), take=True
        )
        assert taken is not None
        record, entry = await h.machines.send_event(inst.id, "ADD", {"k": 10}, event_id="e")
        assert gone == ["its lease was taken by another replica"]
        assert len(tried) == 5  # refused by the fence, then written on the reloaded instance
        assert entry.sequence == 5 and record.data == {"n": 16}
        history = await machine_store.list_history(inst.id)
        assert [e.event_id for e in history] == [None, None, None, None, "e"]
        assert commits == []
    finally:
        await close(h)


async def test_events_past_the_streak_are_written_at_once_after_one_loop_turn(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that never waits (each send_event returns without a suspension) keeps the loop
    from its sockets: past NOW_STREAK_SECONDS the store writes nothing at once until the loop
    went round. The instance loop then gives it one turn and writes the event at once, not
    through the group commit's writer task (its loop turns and wake-ups cost ~100 µs an event):
    the loop polls its sockets between such events, and each is one transaction all the same."""
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 0.0)
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        await h.define(COUNTER)
        inst = await h.machines.create_instance("counter")
        selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        polls: list[Any] = []
        select = selector.select

        def counting(timeout: Any = None) -> Any:
            polls.append(timeout)
            return select(timeout)

        monkeypatch.setattr(selector, "select", counting)
        await asyncio.sleep(0.05)  # an idle loop, no streak under way
        groups, by_writer = store.instances.groups, store.instances.writer.groups
        polled = len(polls)
        for k in range(1, 10):  # back to back: no suspension of this sender's own
            record, entry = await h.machines.send_event(inst.id, "ADD", {"k": k})
            assert entry.sequence == k + 1
        assert record.data == {"n": 45}
        assert store.instances.groups - groups == 9  # one transaction each
        # Written at once (one or two, on a loaded machine, may find a background task's work
        # ready on the loop just then: the group commit's way); before, every other event
        # went the group commit's way (whose writer task let the loop go round).
        assert store.instances.writer.groups - by_writer <= 2
        assert len(polls) - polled >= 8  # the loop went round before each of the last eight
        stored = await store.instances.get_instance(inst.id)
        assert stored is not None and stored.data == {"n": 45} and stored.last_sequence == 10
        # Senders at once keep their order: the first holds the instance through its turn.
        sent = [
            h.machines.send_event(inst.id, "ADD", {"k": 1}, event_id=f"o{k}") for k in (1, 2, 3)
        ]
        await asyncio.gather(*sent)
        history = await store.instances.list_history(inst.id, after_sequence=10)
        assert [e.event_id for e in history] == ["o1", "o2", "o3"]
    finally:
        await close(h)
        await store.close()


async def test_a_sender_cancelled_during_the_loop_turn_has_its_event_written(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance loop's turn before a write at once (the streak spent) is no way out: a
    sender cancelled there hears CancelledError, and its event is written all the same, as a
    batch already submitted is; the instance takes the next event on what is stored."""
    monkeypatch.setattr(sqlite_writes, "NOW_STREAK_SECONDS", 0.0)
    store = await open_backend("sqlite", tmp_path)
    h = await make(store)
    try:
        await h.define(COUNTER)
        inst = await h.machines.create_instance("counter")
        await asyncio.sleep(0.05)
        await h.machines.send_event(inst.id, "ADD", {"k": 1})  # a streak begins
        yield_first = store.instances.yield_first
        assert yield_first is not None and yield_first()
        task = asyncio.ensure_future(h.machines.send_event(inst.id, "ADD", {"k": 2}))
        await asyncio.sleep(0)  # the sender runs to its loop turn
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await store.instances.get_instance(inst.id)
        assert stored is not None and stored.data == {"n": 3} and stored.last_sequence == 3
        record, _ = await h.machines.send_event(inst.id, "ADD", {"k": 4})
        assert record.data == {"n": 7} and record.last_sequence == 4
    finally:
        await close(h)
        await store.close()
