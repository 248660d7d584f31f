"""The MachineStore contract, once per backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
)
from agentrun.storage.machines_sql import SqlMachineStore
from tests.machines.conftest import open_backend


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[MachineStore]:
    base = await open_backend(request.param, tmp_path)
    machines = base.instances
    await machines.open()
    yield machines
    await machines.close()
    await base.close()


def _instance(tenant: str = "t", **kw: Any) -> InstanceRecord:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "tenant": tenant,
        "workflow": "wf",
        "version": 1,
        "state": InstanceState.ACTIVE,
        "current": "a",
        "data": {"n": 1},
        "input": {"i": 2},
        "created_at": 1.0,
        "updated_at": 1.0,
        "last_sequence": 1,
        "entry_sequence": 1,
    }
    base.update(kw)
    return InstanceRecord(**base)


def _entry(
    rec: InstanceRecord, seq: int, event_id: str | None = None, to: str = "a"
) -> HistoryRecord:
    return HistoryRecord(
        rec.id,
        seq,
        EntryKind.TRANSITION,
        float(seq),
        "E",
        event_id,
        {"v": seq},
        "a",
        to,
        0,
        [{"ok": True}],
        {"n": seq},
    )


async def test_create_is_idempotent_per_request_id(store: MachineStore) -> None:
    tenant = uuid.uuid4().hex
    first, created = await store.create_instance(
        _instance(tenant, request_id="r"), [_entry(_instance(), 1)][:0]
    )
    again, created_again = await store.create_instance(_instance(tenant, request_id="r"))
    assert created and not created_again and again.id == first.id


async def test_commit_history_timers_and_reads(store: MachineStore) -> None:
    tenant = uuid.uuid4().hex
    rec = _instance(tenant)
    timer = TimerRecord(rec.id, "1:0", "a", 0, 100.0)
    await store.create_instance(
        rec,
        [HistoryRecord(rec.id, 1, EntryKind.CREATED, 1.0, "create", None, None, "", "a")],
        [timer],
    )
    assert [t.key for t in await store.list_timers() if t.instance_id == rec.id] == ["1:0"]
    moved = _instance(
        tenant,
        id=rec.id,
        current="b",
        data={"n": 2},
        last_sequence=3,
        entry_sequence=3,
        invoke_execution=f"{rec.id}.invoke.3",
    )
    await store.commit(
        MachineBatch(
            moved,
            [_entry(rec, 2, "x"), _entry(rec, 3, "y", to="b")],
            timers=[TimerRecord(rec.id, "3:0", "b", 0, 50.0)],
        )
    )
    got = await store.get_instance(rec.id)
    assert (got.current, got.data, got.last_sequence, got.invoke_execution) == (
        "b",
        {"n": 2},
        3,
        moved.invoke_execution,
    )
    assert [t.key for t in await store.list_timers() if t.instance_id == rec.id] == ["3:0"]
    assert await store.event_ids(rec.id) == {"x": 2, "y": 3}
    page = await store.list_history(rec.id, after_sequence=1, limit=1)
    assert [(e.sequence, e.event_id, e.event_data, e.actions, e.assigned) for e in page] == [
        (2, "x", {"v": 2}, [{"ok": True}], {"n": 2})
    ]
    assert rec.id in [r.id for r in await store.list_invoking()]
    await store.commit(MachineBatch(moved, [_entry(rec, 4)], fired="3:0"))
    assert [t for t in await store.list_timers() if t.instance_id == rec.id] == []
    with pytest.raises(ValueError):  # an event id is applied once
        await store.commit(MachineBatch(moved, [_entry(rec, 5, "x")]))
    listed = await store.list_instances(tenant, limit=10, current="b")
    assert [r.id for r in listed] == [rec.id]
    assert await store.list_instances(tenant, limit=10, states=[InstanceState.FAILED]) == []


async def test_concurrent_commits_are_grouped(store: MachineStore) -> None:
    tenant = uuid.uuid4().hex
    records = [_instance(tenant) for _ in range(50)]
    for rec in records:
        await store.create_instance(rec)
    groups_before = getattr(store, "groups", 0)
    await asyncio.gather(
        *(
            store.commit(MachineBatch(_instance(tenant, id=r.id, last_sequence=2), [_entry(r, 2)]))
            for r in records
        )
    )
    for rec in records:
        assert (await store.get_instance(rec.id)).last_sequence == 2
    if isinstance(store, SqlMachineStore):
        assert store.groups - groups_before < 10


async def test_a_refused_batch_spares_the_rest_of_its_group(store: MachineStore) -> None:
    tenant = uuid.uuid4().hex
    records = [_instance(tenant) for _ in range(5)]
    for rec in records:
        await store.create_instance(
            rec, [HistoryRecord(rec.id, 1, EntryKind.CREATED, 1.0, "create", None, None, "", "a")]
        )
    # A stale writer re-uses sequence 1 of records[2].
    batches = [
        MachineBatch(_instance(tenant, id=r.id, last_sequence=2), [_entry(r, 1 if k == 2 else 2)])
        for k, r in enumerate(records)
    ]
    results = await asyncio.gather(*(store.commit(b) for b in batches), return_exceptions=True)
    assert [isinstance(r, ValueError) for r in results] == [False, False, True, False, False]
    assert [len(await store.list_history(r.id)) for r in records] == [2, 2, 1, 2, 2]


async def test_a_lease_has_one_owner_and_fences_a_stale_writer(store: MachineStore) -> None:
    from agentrun.storage.base import LeaseLost

    rec, _ = await store.create_instance(
        _instance(owner="a", lease_epoch=1, lease_expires_at=100.0), [_entry(_instance(), 1)][:0]
    )
    got = await store.get_instance(rec.id)
    assert (got.owner, got.lease_epoch, got.lease_expires_at) == ("a", 1, 100.0)
    # Held by `a` and not expired: `b` gets it only by taking it.
    assert await store.acquire(rec.id, "b", lease_seconds=10, now=50.0, take=False) is None
    mine = await store.acquire(rec.id, "a", lease_seconds=10, now=50.0, take=False)
    assert (mine.owner, mine.lease_epoch, mine.lease_expires_at) == ("a", 1, 60.0)  # kept
    taken = await store.acquire(rec.id, "b", lease_seconds=10, now=55.0, take=True)
    assert (taken.owner, taken.lease_epoch) == ("b", 2)
    assert (
        await store.acquire(rec.id, "b", lease_seconds=10, now=55.0, take=False, tenant="x") is None
    )
    # `a` is stale now: its fenced commit writes nothing.
    moved = _instance(id=rec.id, last_sequence=2, current="b")
    with pytest.raises(LeaseLost):
        await store.commit(MachineBatch(moved, [_entry(rec, 2)], fence=("a", 1)))
    assert (await store.get_instance(rec.id)).last_sequence == 1
    assert await store.list_history(rec.id) == []
    await store.commit(MachineBatch(moved, [_entry(rec, 2)], fence=("b", 2)))
    after = await store.get_instance(rec.id)
    # A batch writes the instance, never its lease.
    assert (after.last_sequence, after.owner, after.lease_epoch) == (2, "b", 2)


async def test_leases_are_renewed_claimed_when_expired_and_released(store: MachineStore) -> None:
    owner, other = uuid.uuid4().hex, uuid.uuid4().hex
    timed, _ = await store.create_instance(
        _instance(owner=owner, lease_epoch=1, lease_expires_at=10.0),
        timers=[TimerRecord("", "1:0", "a", 0, 5.0)][:0],
    )
    await store.commit(
        MachineBatch(timed, [], [TimerRecord(timed.id, "1:0", "a", 0, 5.0)], fence=(owner, 1))
    )
    idle, _ = await store.create_instance(
        _instance(owner=owner, lease_epoch=1, lease_expires_at=10.0)
    )
    ended, _ = await store.create_instance(
        _instance(owner=owner, lease_epoch=1, lease_expires_at=10.0, state=InstanceState.COMPLETED)
    )
    assert await store.renew_leases(owner, lease_seconds=10, now=5.0) >= {timed.id, idle.id}
    assert ended.id not in await store.renew_leases(owner, lease_seconds=10, now=5.0)
    # Not expired (renewed to 15): nothing to claim.
    assert timed.id not in {
        r.id for r in await store.claim(other, lease_seconds=10, now=14.0, limit=1000)
    }
    # Expired: the instance with a timer is claimed (epoch + 1); the idle one is left alone
    # (an event takes it when one comes).
    claimed = {r.id: r for r in await store.claim(other, lease_seconds=10, now=16.0, limit=1000)}
    assert timed.id in claimed and idle.id not in claimed
    assert (claimed[timed.id].owner, claimed[timed.id].lease_epoch) == (other, 2)
    assert timed.id not in await store.renew_leases(owner, lease_seconds=10, now=16.0)
    # Released: another replica claims at once; its own are claimed again only on request.
    await store.release_leases(other)
    assert timed.id not in {
        r.id for r in await store.claim(other, lease_seconds=10, now=17.0, limit=1000)
    }
    again = {r.id: r for r in await store.claim(owner, lease_seconds=10, now=17.0, limit=1000)}
    assert again[timed.id].lease_epoch == 3
    own = {
        r.id
        for r in await store.claim(owner, lease_seconds=10, now=17.0, limit=1000, include_own=True)
    }
    assert timed.id in own


async def test_claims_by_id_and_the_instances_a_replica_holds(store: MachineStore) -> None:
    """A restart reads the ids it holds before its pages and claims those they skipped again
    by id (machine/leases.py `_retake_loop`): `held_instances` lists a replica's ACTIVE
    instances with something to drive (those `include_own` takes back), `ids` limits a claim
    to those."""
    owner, other = uuid.uuid4().hex, uuid.uuid4().hex

    async def timed(holder: str) -> str:
        rec, _ = await store.create_instance(
            _instance(owner=holder, lease_epoch=1, lease_expires_at=10.0)
        )
        timer = TimerRecord(rec.id, "1:0", "a", 0, 5.0)
        await store.commit(MachineBatch(rec, [], [timer], fence=(holder, 1)))
        return rec.id

    ids = [await timed(owner) for _ in range(3)]
    theirs = await timed(other)
    idle, _ = await store.create_instance(
        _instance(owner=owner, lease_epoch=1, lease_expires_at=10.0)
    )
    ended, _ = await store.create_instance(
        _instance(owner=owner, lease_epoch=1, lease_expires_at=10.0, state=InstanceState.COMPLETED)
    )
    assert await store.held_instances(owner) == set(ids)
    assert await store.held_instances(other) == {theirs}
    again = await store.claim(
        owner,
        lease_seconds=10,
        now=5.0,
        limit=10,
        include_own=True,
        ids=[ids[2], ids[0], idle.id, ended.id],
    )
    assert sorted((r.id, r.owner, r.lease_epoch) for r in again) == sorted(
        [(ids[0], owner, 2), (ids[2], owner, 2)]
    )
    assert (await store.get_instance(ids[1])).lease_epoch == 1
    # Another's held lease is not taken by id either.
    assert await store.claim(owner, lease_seconds=10, now=5.0, limit=10, ids=[theirs]) == []


async def test_a_group_of_fenced_commits_refuses_only_the_stale_one(store: MachineStore) -> None:
    """Batches committed together (on PostgreSQL: one statement, pg_instances.py) are fenced
    each: the stale one writes nothing and gets LeaseLost, its neighbours commit."""
    from agentrun.storage.base import LeaseLost

    tenant = uuid.uuid4().hex
    records = [
        (await store.create_instance(_instance(tenant, owner="a", lease_epoch=1)))[0]
        for _ in range(3)
    ]
    await store.acquire(records[1].id, "b", lease_seconds=10, now=5.0, take=True)  # epoch 2
    batches = [
        MachineBatch(
            _instance(tenant, id=r.id, current="b", last_sequence=2),
            [_entry(r, 2)],
            [TimerRecord(r.id, "2:0", "b", 0, 9.0)],
            fence=("a", 1),
        )
        for r in records
    ]
    results = await asyncio.gather(*(store.commit(b) for b in batches), return_exceptions=True)
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], LeaseLost), results
    for k, rec in enumerate(records):
        got = await store.get_instance(rec.id)
        written = k != 1
        assert (got.current, got.last_sequence) == (("b", 2) if written else ("a", 1))
        assert len(await store.list_history(rec.id)) == (1 if written else 0)
        timers = [t.key for t in await store.list_timers(instance_id=rec.id)]
        assert timers == (["2:0"] if written else [])


async def test_a_batch_on_a_moved_base_is_refused_alone(store: MachineStore) -> None:
    tenant = uuid.uuid4().hex
    records = [(await store.create_instance(_instance(tenant)))[0] for _ in range(3)]
    moved = _instance(tenant, id=records[1].id, last_sequence=2)
    await store.commit(MachineBatch(moved, [_entry(records[1], 2)]))
    # Computed from sequence 1 each; the stored one of records[1] is 2 now.
    batches = [
        MachineBatch(_instance(tenant, id=r.id, current="c", last_sequence=3), [], base=1)
        for r in records
    ]
    results = await asyncio.gather(*(store.commit(b) for b in batches), return_exceptions=True)
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], ValueError), results
    assert [(await store.get_instance(r.id)).last_sequence for r in records] == [3, 2, 3]


async def test_timers_fired_added_and_replaced(store: MachineStore) -> None:
    """A fired timer goes, one added by the same batch (a retry timer of that key) is set, and
    replaced timers are exactly the batch's: on every backend as the memory store does it."""
    rec, _ = await store.create_instance(_instance())
    timers = [TimerRecord(rec.id, "k1", "a", 0, 1.0), TimerRecord(rec.id, "k2", "a", 1, 2.0)]
    await store.commit(MachineBatch(rec, [], timers))

    async def stored() -> list[tuple[str, str, int, float]]:
        found = await store.list_timers(instance_id=rec.id)
        return sorted((t.key, t.state, t.index, t.fire_at) for t in found)

    assert await stored() == [("k1", "a", 0, 1.0), ("k2", "a", 1, 2.0)]
    retry = TimerRecord(rec.id, "k1", "a", 0, 7.0)
    await store.commit(MachineBatch(rec, [], fired="k1", added=[retry]))
    assert await stored() == [("k1", "a", 0, 7.0), ("k2", "a", 1, 2.0)]
    await store.commit(MachineBatch(rec, [], fired="k2"))
    assert await stored() == [("k1", "a", 0, 7.0)]
    replaced = [TimerRecord(rec.id, "k1", "b", 3, 8.0), TimerRecord(rec.id, "k3", "b", 4, 9.0)]
    extra = TimerRecord(rec.id, "r", "b", 0, 10.0)
    await store.commit(MachineBatch(rec, [], replaced, added=[extra]))
    assert await stored() == [("k1", "b", 3, 8.0), ("k3", "b", 4, 9.0), ("r", "b", 0, 10.0)]
    await store.commit(MachineBatch(rec, [], []))
    assert await stored() == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_sql_commits_announce_their_history(kind: str, tmp_path: Any) -> None:
    """A SQL store's commits tell the other replicas of new history themselves (`announces`:
    the engine sends no NOTIFY after them): another store on the database hears `events` for
    the instance, on PostgreSQL from the commit's own pg_notify, on SQLite from its poller,
    for an instance it follows (`watch`)."""
    from agentrun.storage.notifications import OUTAGE_POLL_SECONDS
    from tests.machines.conftest import until

    writer_base = await open_backend(kind, tmp_path)
    reader_base = await open_backend(kind, tmp_path)
    heard: list[tuple[str, str]] = []
    reader_base.listen(lambda kind_, key: heard.append((kind_, key)))
    watched: set[str] = set()
    reader_base.watch(lambda: watched)
    store = writer_base.instances
    await store.open()
    try:
        assert store.announces
        if kind == "postgresql":  # once the reader's LISTEN connection is up

            async def listening() -> bool:
                await writer_base.notify("events", "probe")
                await asyncio.sleep(0.1)
                return ("events", "probe") in heard

            await until(listening)
            # ... and its catch-up passes (which read changed rows) are over: what is heard
            # then comes from the commit's own NOTIFY.
            channel = reader_base.notifications
            passes = -1
            while passes != channel.catch_up_passes:
                passes = channel.catch_up_passes
                await asyncio.sleep(2 * OUTAGE_POLL_SECONDS + 0.2)
        else:  # once the reader's poller knows where the tables end (what follows is new)
            from agentrun.storage.sqlite_poll import SqliteNotifications

            channel = reader_base.notifications
            assert isinstance(channel, SqliteNotifications)
            await until(lambda: channel.receiving)
        rec, _ = await store.create_instance(_instance())
        watched.add(rec.id)
        if kind == "sqlite":  # the poller has read where the instance is
            wanted = channel.passes + 2
            await until(lambda: channel.passes >= wanted)
        heard.clear()
        moved = _instance(id=rec.id, last_sequence=2)
        await store.commit(MachineBatch(moved, [_entry(rec, 2)]))
        await until(lambda: ("events", rec.id) in heard, timeout=20)
        if kind == "postgresql":
            assert reader_base.notifications.catch_up_passes == passes
    finally:
        await store.close()
        await writer_base.close()
        await reader_base.close()
