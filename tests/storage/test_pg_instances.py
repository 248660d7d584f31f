"""pg_instances.py: a group of one batch with one history entry takes the statement's `one`
variant (scalar parameters, `_one_args`), which must write what the group's arrays write."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    TimerRecord,
)
from agentrun.storage.pg_instances import _one_args, _params, _statement
from tests.machines.conftest import open_backend


def _record(**kw: Any) -> InstanceRecord:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "tenant": "t",
        "workflow": "wf",
        "version": 1,
        "state": InstanceState.ACTIVE,
        "current": "b",
        "data": {"n": 1.5e16, "s": "é"},
        "input": None,
        "created_at": 1.0,
        "updated_at": 7,  # an int where a float is stored: converted as the arrays convert it
        "last_sequence": 2,
        "entry_sequence": 2,
        "owner": "me",
        "lease_epoch": 3,
    }
    base.update(kw)
    return InstanceRecord(**base)


def _entry(rec: InstanceRecord, seq: int, **kw: Any) -> HistoryRecord:
    base: dict[str, Any] = {
        "instance_id": rec.id,
        "sequence": seq,
        "kind": EntryKind.TRANSITION,
        "time": 7,
        "event": "GO",
        "event_id": None,
        "event_data": None,
        "from_state": "a",
        "to_state": "b",
    }
    base.update(kw)
    return HistoryRecord(**base)


def _batches() -> list[MachineBatch]:
    """Batches of one entry in each shape `_one_args` builds (fence, base, JSON, timers)."""
    rec = _record()
    failed = _record(
        state=InstanceState.FAILED,
        ended_at=9,
        error={"type": "x", "message": "m"},
        pending={"event": {"name": "GO"}},
        invoke_execution="child",
        labels={"k": "v"},
        data={},
    )
    full = _entry(
        failed,
        3,
        event_id="e1",
        event_data=[1, None],
        transition_index=0,
        actions=[{"ok": False}],
        assigned={"n": 2},
        instance_state=InstanceState.FAILED,
        error={"type": "x"},
        reentered=True,
    )
    timer = TimerRecord(rec.id, "3:0", "b", 0, 12)
    return [
        MachineBatch(rec, [_entry(rec, 3)]),
        MachineBatch(rec, [_entry(rec, 3)], fence=("me", 3), base=2),
        MachineBatch(failed, [full], timers=[]),
        MachineBatch(rec, [_entry(rec, 3)], timers=[timer]),
        MachineBatch(rec, [_entry(rec, 3)], fired="2:0"),
        MachineBatch(rec, [_entry(rec, 3)], fired="2:0", added=[timer]),
        MachineBatch(rec, [_entry(rec, 3)], timers=[timer], fired="2:0", added=[timer]),
    ]


@pytest.mark.parametrize("index", range(7))
def test_one_args_are_the_groups_arrays_one_element_each(index: int) -> None:
    batch = _batches()[index]
    timers, args = _one_args(batch)
    group_timers, arrays = _params([batch])
    assert timers == group_timers
    assert len(args) == len(arrays)
    # Instance and history parameters: the scalar each one-element array holds; timers: the
    # same arrays (the `one` variant keeps them).
    for got, array in zip(args, arrays, strict=True):
        if isinstance(got, list):
            assert got == array
        else:
            assert [got] == array
            assert type(got) is type(array[0])


def test_the_one_variant_has_the_groups_parameters_as_scalars() -> None:
    for timers in (False, True):
        for notify in (False, True):
            group, one = _statement(timers, notify), _statement(timers, notify, True)
            assert "VALUES (" in one and "unnest($1::" not in one
            assert one.replace("(VALUES (", "unnest(").count("$") == group.count("$")


async def test_postgres_writes_one_batch_as_a_group_writes_it(tmp_path: Any) -> None:
    """The same commits, one instance's alone (the `one` variant) and two at once (the group's
    arrays): the stored rows read back the same."""
    base = await open_backend("postgresql", tmp_path)
    store = base.instances
    await store.open()
    try:
        read: list[Any] = []
        for together in (False, True):
            recs = [
                _record(current="a", data={}, updated_at=1.0, last_sequence=1, entry_sequence=1)
                for _ in range(2)
            ]
            for rec in recs:
                await store.create_instance(
                    rec,
                    [HistoryRecord(rec.id, 1, EntryKind.CREATED, 1.0, "c", None, None, "", "a")],
                    [TimerRecord(rec.id, "1:0", "a", 0, 5.0)],
                )
            batches = []
            for rec in recs:
                moved = _record(
                    id=rec.id,
                    data={"n": 1.5e16, "s": "é", "none": None},
                    labels={"k": "v"},
                    invoke_execution="child",
                    last_sequence=2,
                    entry_sequence=2,
                )
                entry = _entry(
                    moved,
                    2,
                    event_id="e",
                    event_data={"x": [1, 2.0]},
                    transition_index=1,
                    actions=[{"ok": True}],
                    assigned={"n": 1.5e16},
                    reentered=True,
                )
                timer = TimerRecord(rec.id, "2:0", "b", 0, 12)
                batches.append(
                    MachineBatch(moved, [entry], timers=[timer], fence=("me", 3), base=1)
                )
            if together:
                await asyncio.gather(*(store.commit(b) for b in batches))
            else:
                for batch in batches:
                    await store.commit(batch)
            for rec in recs:
                got = await store.get_instance(rec.id)
                assert got is not None
                got.id = ""
                history = await store.list_history(rec.id)
                for e in history:
                    e.instance_id = ""
                timers = await store.list_timers(instance_id=rec.id)
                read.append((got, history, [(t.key, t.state, t.fire_at) for t in timers]))
        alone, grouped = read[:2], read[2:]
        assert alone == grouped
        assert alone[0][0].data == {"n": 1.5e16, "s": "é", "none": None}
        assert alone[0][2] == [("2:0", "b", 12.0)]
    finally:
        await store.close()
        await base.close()


async def test_postgres_one_batch_refused_by_its_fence_writes_nothing(tmp_path: Any) -> None:
    from agentrun.storage.base import LeaseLost

    base = await open_backend("postgresql", tmp_path)
    store = base.instances
    await store.open()
    try:
        rec = _record(current="a", data={})
        await store.create_instance(rec)
        stale = MachineBatch(_record(id=rec.id), [_entry(rec, 3)], fence=("me", 2))
        with pytest.raises(LeaseLost):
            await store.commit(stale)
        assert await store.list_history(rec.id) == []
        assert (await store.get_instance(rec.id)).current == "a"  # type: ignore[union-attr]
    finally:
        await store.close()
        await base.close()


async def test_postgres_one_batch_is_fenced_against_a_lease_taken_meanwhile(
    tmp_path: Any,
) -> None:
    """The `one` variant's UPDATE holds the fence in its own WHERE: a take-over committed by
    another transaction while the commit waits for the row's lock is seen on the row's newest
    version, and the stale commit writes nothing (LeaseLost)."""
    import asyncpg

    from agentrun.storage.base import LeaseLost
    from tests.machines.conftest import pg_url

    base = await open_backend("postgresql", tmp_path)
    store = base.instances
    await store.open()
    other = await asyncpg.connect(pg_url().replace("postgresql+asyncpg", "postgresql"))
    try:
        rec = _record(current="a", data={}, owner="me", lease_epoch=3)
        await store.create_instance(rec)
        taking = other.transaction()
        await taking.start()
        await other.execute(
            "UPDATE sm_instances SET owner = 'them', lease_epoch = 4 WHERE id = $1", rec.id
        )
        commit = asyncio.ensure_future(
            store.commit(MachineBatch(_record(id=rec.id), [_entry(rec, 3)], fence=("me", 3)))
        )
        await asyncio.sleep(0.3)
        assert not commit.done()  # waits for the row's lock
        await taking.commit()
        with pytest.raises(LeaseLost):
            await commit
        assert await store.list_history(rec.id) == []
        got = await store.get_instance(rec.id)
        assert got is not None and (got.current, got.owner, got.lease_epoch) == ("a", "them", 4)
    finally:
        await other.close()
        await store.close()
        await base.close()
