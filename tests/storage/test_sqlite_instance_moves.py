"""SQLite: an event that only moves its instance (its current state, updated_at, last and entry
sequences; nothing indexed or queried by) writes its history entry alone, the instance's row
left as it was (migration 0023, sqlite_instances.py). Every reader still gets the instance as
committed: its newest entry folded into the row (machine_rows.py), through this store, another
one on the same file, and the transaction's way's base check. An event that changes anything
else rewrites the row. And the reason, counted: one b-tree page an event, not two."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.storage.base import LeaseLost
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.machine_writes import write_group
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    TimerRecord,
)
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqlite_instances import SqliteInstanceWriter
from tests.storage.sqlite_migrations import wal_frames
from tests.storage.sqlite_trace import statements

T0 = 1_700_000_000.0
CYCLE = "abc"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "machines.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqlStore]:
    store = await _open(path)
    try:
        yield store
    finally:
        await store.instances.close()
        await store.close()


async def _open(path: Path) -> SqlStore:
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.instances.open()
    return store


async def _create(store: SqlStore, id: str = "sm-a", **kw: Any) -> InstanceRecord:
    fields: dict[str, Any] = {
        "id": id,
        "tenant": "acme",
        "workflow": "wf",
        "version": 1,
        "state": InstanceState.ACTIVE,
        "current": "a",
        "data": {"n": 1, "f": 2.0},
        "input": {"i": 2},
        "created_at": T0,
        "updated_at": T0,
        "last_sequence": 1,
        "entry_sequence": 1,
        "labels": {"k": "v"},
        "owner": "r1",
        "lease_epoch": 1,
        "lease_expires_at": T0 + 1e9,
    }
    fields.update(kw)
    record = InstanceRecord(**fields)
    created = HistoryRecord(id, 1, EntryKind.CREATED, T0, "create", None, None, "", "a")
    timer = TimerRecord(id, "1:0", "a", 0, T0 + 50)
    await store.instances.create_instance(record, [created], [timer])
    return record


def _move(record: InstanceRecord, *, enter: bool = True, **kw: Any) -> MachineBatch:
    """The next event of `record`'s instance: to the next state of the cycle (`enter`), or a
    NO_TRANSITION entry that stays; `kw` changes the instance further."""
    seq = record.last_sequence + 1
    to = CYCLE[(CYCLE.index(record.current) + 1) % 3] if enter else record.current
    moved = dataclasses.replace(
        record,
        current=to,
        updated_at=T0 + seq,
        last_sequence=seq,
        entry_sequence=seq if enter else record.entry_sequence,
        **kw,
    )
    kind = EntryKind.TRANSITION if enter else EntryKind.NO_TRANSITION
    entry = HistoryRecord(
        record.id, seq, kind, T0 + seq, "GO", None, None, record.current, to, 0 if enter else None
    )
    entry.instance_state = moved.state
    return MachineBatch(moved, [entry], fence=(record.owner or "", record.lease_epoch))


def _row(path: Path, id: str = "sm-a") -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    try:
        return tuple(
            conn.execute(
                "SELECT current, last_sequence, entry_sequence, updated_at, data FROM sm_instances"
                " WHERE id = ?",
                (id,),
            ).fetchone()
        )
    finally:
        conn.close()


def _same(got: InstanceRecord | None, want: InstanceRecord) -> None:
    assert got is not None
    assert dataclasses.asdict(got) == dataclasses.asdict(want)


async def test_an_event_that_only_moves_writes_its_entry_alone_and_reads_the_same(
    store: SqlStore, path: Path
) -> None:
    record = await _create(store)
    updates = statements(store, "UPDATE sm_instances")
    for enter in (True, True, False, True):  # a NO_TRANSITION keeps the entry sequence
        batch = _move(record, enter=enter)
        await store.instances.commit(batch)
        record = batch.instance
    assert updates == []
    assert _row(path)[:3] == ("a", 1, 1)  # the row as created
    assert (record.current, record.last_sequence, record.entry_sequence) == ("a", 5, 5)

    machines = store.instances
    _same(await machines.get_instance("sm-a"), record)
    listed = await machines.list_instances("acme", limit=10, current="a")
    assert len(listed) == 1
    _same(listed[0], record)
    assert await machines.list_instances("acme", limit=10, current="b") == []
    history = await machines.list_history("sm-a")
    assert [(e.sequence, e.to_state) for e in history] == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "c"),
        (5, "a"),
    ]
    # Another store on the file (another process, or this one restarted) reads the same.
    other = await _open(path)
    try:
        _same(await other.instances.get_instance("sm-a"), record)
        # A lease taken, kept, claimed: the record it comes with is the instance as moved.
        taken = await other.instances.acquire("sm-a", "r2", lease_seconds=10, now=T0, take=True)
        _same(
            taken, dataclasses.replace(record, owner="r2", lease_epoch=2, lease_expires_at=T0 + 10)
        )
        claimed = await other.instances.claim("r3", lease_seconds=10, now=T0 + 20, limit=5)
        assert len(claimed) == 1
        _same(
            claimed[0],
            dataclasses.replace(record, owner="r3", lease_epoch=3, lease_expires_at=T0 + 30),
        )
    finally:
        await other.instances.close()
        await other.close()
    # r1's lease is gone: its next event is refused, and writes nothing.
    with pytest.raises(LeaseLost):
        await machines.commit(_move(record))
    assert [e.sequence for e in await machines.list_history("sm-a")][-1] == 5


async def test_an_event_that_changes_more_rewrites_the_row(store: SqlStore, path: Path) -> None:
    """Data, labels, pending, an invoke, an error or the end change the row: it is rewritten,
    and the moves after it fold into it again."""
    record = await _create(store)
    updates = statements(store, "UPDATE sm_instances")
    changes: list[dict[str, Any]] = [
        {"data": {"n": 2, "f": 2.0}},
        {"labels": {"k": "w"}},
        {"pending": {"event": {"name": "GO"}, "attempt": 1}},
        {"pending": None, "invoke_execution": "ex-1"},
        {},
    ]
    for change in changes:
        batch = _move(record, **change)
        await store.instances.commit(batch)
        record = batch.instance
    assert len(updates) == 4, updates
    assert _row(path)[:2] == ("b", 5)  # the last rewrite's; the last event's is in its entry
    _same(await store.instances.get_instance("sm-a"), record)
    invoking = await store.instances.list_invoking()
    assert len(invoking) == 1
    _same(invoking[0], record)

    ended = _move(record, state=InstanceState.COMPLETED, ended_at=T0 + 9)
    ended.history[0].instance_state = InstanceState.COMPLETED
    await store.instances.commit(ended)
    assert len(updates) == 5 and _row(path)[:2] == ("a", 7)
    _same(await store.instances.get_instance("sm-a"), ended.instance)
    done = await store.instances.list_instances("acme", limit=5, states=[InstanceState.COMPLETED])
    assert [r.id for r in done] == ["sm-a"]


async def test_a_base_is_the_newest_entrys_sequence(store: SqlStore, path: Path) -> None:
    """A batch with a base (a retry's, which has no entry) holds only on the instance's last
    sequence as readers fold it, on the writer's own path and the transaction's way alike."""
    record = await _create(store)
    for _ in range(3):
        batch = _move(record)
        await store.instances.commit(batch)
        record = batch.instance
    assert _row(path)[1] == 1 and record.last_sequence == 4
    held = dataclasses.replace(record, pending={"event": {"name": "GO"}, "attempt": 1})
    writer = store.database.instance_writer()
    assert isinstance(writer, SqliteInstanceWriter)
    assert await writer([MachineBatch(held, [], base=1, fence=("r1", 1))]) == [UNWRITTEN]

    def transaction(batch: MachineBatch) -> Any:
        return store.database.transaction(lambda conn: write_group(store.database, conn, [batch]))

    with pytest.raises(KeyError):
        await transaction(MachineBatch(held, [], base=1, fence=("r1", 1)))
    with pytest.raises(ValueError):
        await store.instances.commit(MachineBatch(held, [], base=3, fence=("r1", 1)))
    await transaction(MachineBatch(held, [], base=4, fence=("r1", 1)))
    _same(await store.instances.get_instance("sm-a"), held)
    assert _row(path)[1] == 4
    # And the next move on top of it, through the writer, then the transaction's way.
    batch = _move(held)
    await store.instances.commit(batch)
    after = _move(batch.instance)
    after.base = 5
    await transaction(after)
    _same(await store.instances.get_instance("sm-a"), after.instance)


async def test_an_event_writes_its_entry_alone(store: SqlStore, path: Path) -> None:
    """Counted in the WAL (4 KB pages, frames after a TRUNCATE checkpoint): 100 events that
    only move their instance write the history entry alone, not the instance's row. Measured
    with `sm_history` WITHOUT ROWID (0022): 203 frames with the row rewritten each time, 103
    with the entry alone. Since 0025 `sm_history` is a rowid table again (an entry over ~1 KB
    costs fewer pages so), whose entry writes two pages, its rows and its key's index: 203 with
    the entry alone, 303 with the row rewritten too; the bound tells those apart."""
    record = await _create(store)
    side = sqlite3.connect(path, isolation_level=None)
    try:
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for _ in range(100):
            batch = _move(record)
            await store.instances.commit(batch)
            record = batch.instance
        frames = wal_frames(path)
        assert frames <= 240, frames
    finally:
        side.close()
    _same(await store.instances.get_instance("sm-a"), record)


async def test_the_transaction_way_rows_read_the_same(store: SqlStore) -> None:
    """A group naming one instance twice goes the transaction's way whole: it rewrites the row
    (no fold needed) and the records read are the committed ones."""
    record = await _create(store)
    first = _move(record)
    await store.instances.commit(first)
    second = _move(first.instance)
    third = _move(second.instance)
    both = [store.instances.submit(second), store.instances.submit(third)]
    for future in both:
        await future
    _same(await store.instances.get_instance("sm-a"), third.instance)
    rows = await store.database.read(sa.text("SELECT count(*) FROM sm_history"))
    assert rows[0][0] == 4
