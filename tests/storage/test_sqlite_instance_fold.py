"""SQLite: a batch of one entry that only moves its instance is written by one statement
(`sqlite_instances._fold_one`: the entry inserted from the instance's row, its checks in the
INSERT's WHERE), and answers and writes what reading the row first (`_apply`, the group's
way) answers and writes, whatever the row holds: every term that must hold, one at a time."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
)
from agentrun.storage.sql import SqlStore
from agentrun.storage.sqldb_sqlite import SqliteDatabase
from agentrun.storage.sqlite_instances import write_instances, write_one
from tests.storage.sqlite_trace import statements
from tests.storage.test_sqlite_instances import T0, _instance, _stored, store

__all__ = ["store"]  # the fixture (machines.db in tmp_path), shared


async def _create(store: SqlStore, id: str) -> InstanceRecord:
    record = _instance(id, input=None, labels={"k": "v"})
    created = HistoryRecord(id, 1, EntryKind.CREATED, T0, "create", None, None, "", "a")
    await store.instances.create_instance(record, [created], [])
    return record


def _move(record: InstanceRecord, seq: int | None = None, **kw: Any) -> MachineBatch:
    """The next event of `record`'s instance (sequence `seq`, by default the next one): to
    state b, nothing assigned, no action; `kw` changes the instance record further."""
    seq = record.last_sequence + 1 if seq is None else seq
    moved = dataclasses.replace(
        record, current="b", updated_at=T0 + seq, last_sequence=seq, entry_sequence=seq, **kw
    )
    entry = HistoryRecord(
        record.id, seq, EntryKind.TRANSITION, T0 + seq, "GO", None, None, "a", "b", 0
    )
    entry.instance_state = moved.state
    return MachineBatch(moved, [entry], fence=(record.owner or "", record.lease_epoch))


def _run(path: Path, work: Callable[[sqlite3.Connection], Any]) -> Any:
    """`work` in one transaction on a connection of its own, as the store's writer runs it
    (BEGIN IMMEDIATE, COMMIT; rolled back when it raises): its result, or its exception."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            return type(exc)
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()


async def test_an_event_that_only_moves_is_one_statement(store: SqlStore) -> None:
    """Between BEGIN and COMMIT, the entry's INSERT alone: the instance's row is not read back
    (it was: a SELECT of the row, then the INSERT). The instance reads as committed."""
    record = await _create(store, "sm-a")
    database = store.database
    assert isinstance(database, SqliteDatabase)
    await database.turn_transaction(lambda conn: None, items=1, checked=True)  # opens it
    seen = statements(store, "")
    for _ in range(3):
        batch = _move(record)
        written = await database.turn_transaction(
            lambda conn, b=batch: write_one(b, conn), items=1, checked=True
        )
        assert written is True
        record = batch.instance
    body = [s for s in seen if s not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(body) == 3, seen
    assert all(s.startswith("INSERT INTO sm_history") for s in body), body
    got = await store.instances.get_instance("sm-a")
    assert got is not None and dataclasses.asdict(got) == dataclasses.asdict(record)


# What the instance's row holds, or what the batch says, one term of the fold at a time.
_ROW_CHANGES: list[tuple[str, str, tuple[Any, ...]]] = [
    ("data", "UPDATE sm_instances SET data = ? WHERE id = ?", ('{"n": 7}',)),
    ("labels", "UPDATE sm_instances SET labels = ? WHERE id = ?", ("{}",)),
    ("labels null", "UPDATE sm_instances SET labels = ? WHERE id = ?", (None,)),
    ("invoke", "UPDATE sm_instances SET invoke_execution = ? WHERE id = ?", ("ex-1",)),
    ("error", "UPDATE sm_instances SET error = ? WHERE id = ?", ('{"m": 1}',)),
    ("pending", "UPDATE sm_instances SET pending = ? WHERE id = ?", ('{"attempt": 2}',)),
    ("ended", "UPDATE sm_instances SET state = 'COMPLETED', ended_at = ? WHERE id = ?", (T0,)),
    ("ahead", "UPDATE sm_instances SET last_sequence = ? WHERE id = ?", (2,)),
    ("leased", "UPDATE sm_instances SET owner = ? WHERE id = ?", ("r2",)),
    ("epoch", "UPDATE sm_instances SET lease_epoch = ? WHERE id = ?", (2,)),
]
_BATCH_CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("record data", {"data": {"n": 3}}),
    ("record labels", {"labels": {}}),
    ("record invoke", {"invoke_execution": "ex-2"}),
    ("record pending", {"pending": {"attempt": 1}}),
    ("record error", {"error": {"m": 2}}),
    ("record ended", {"state": InstanceState.FAILED, "ended_at": T0 + 2}),
]


@pytest.mark.parametrize(
    ("row", "batch"),
    [
        *[(change, "plain") for change in _ROW_CHANGES],
        *[(None, name) for name, _ in _BATCH_CHANGES],
        (None, "unfenced"),
        (None, "stale"),
        (None, "gap"),
    ],
    ids=lambda v: v if isinstance(v, str) else (v[0] if v else "row as written"),
)
async def test_one_statement_answers_as_reading_the_row_first(
    store: SqlStore, tmp_path: Path, row: tuple[str, str, tuple[Any, ...]] | None, batch: str
) -> None:
    """The same batch on two instances whose rows hold the same: through `write_one` (one
    statement first) and `write_instances` (the row read first): the same answer (written,
    not written, or the same refusal) and the same rows, column by column."""
    path = tmp_path / "machines.db"
    records = {id_: await _create(store, id_) for id_ in ("sm-one", "sm-group")}
    if batch in ("stale", "gap"):
        for id_, record in list(records.items()):  # one move stored on each first
            first = _move(record)
            assert _run(path, lambda conn, b=first: write_one(b, conn)) is True
            records[id_] = first.instance
    answers = []
    for id_, record in records.items():
        if row is not None:
            _run(path, lambda conn, r=row, i=id_: conn.execute(r[1], (*r[2], i)))
        changes = dict(_BATCH_CHANGES).get(batch, {})
        made = _move(record, **changes)
        if batch == "unfenced":
            made.fence = None
        elif batch == "stale":
            made = _move(record, seq=2)  # an entry already stored
        elif batch == "gap":
            made = _move(record, seq=record.last_sequence + 2)
        if made.instance.state is not InstanceState.ACTIVE:
            made.history[0].instance_state = made.instance.state
        if id_ == "sm-one":
            answers.append(_run(path, lambda conn, b=made: write_one(b, conn)))
        else:
            answers.append(_run(path, lambda conn, b=made: write_instances([b], conn)[0]))
    assert answers[0] == answers[1]
    one, group = _stored(path, "sm-one"), _stored(path, "sm-group")
    assert one == group
    if batch in ("plain", "unfenced") and row is None:
        assert answers == [True, True]
        assert one["sm_instances"][0][4] == "'a'"  # current: folded, the row as created
