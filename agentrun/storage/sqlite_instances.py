"""State machine instance commits on SQLite straight through sqlite3: the instance group
commit's `direct` writer, as sqlite_turns.py is the executions'.

Through the transaction's way (`machine_writes.write_group`) each commit went through
SQLAlchemy's connection and transaction objects, a plan lookup, a dict per row and a cursor
per statement: on one instance's event path (one small group per event, on the loop's thread)
more CPU than the statements. Here the group is one transaction on the write connection's
sqlite3 handle (`SqliteDatabase.turn_transaction`), its parameters built from the records
straight into tuples (each column encoded as SQLAlchemy binds it: JSON as json.dumps text,
NULL for None, a bool as 0/1), with SQL built once:
- each batch's instance row read first (`_STORED`), under the transaction's write lock
  (BEGIN IMMEDIATE: nothing moves it before the commit), and its fence (owner, lease epoch)
  and base (the instance's last sequence: the row's, or its newest entry's when greater)
  checked against it: a batch that fails them writes nothing;
- an event that only moves its instance (current, updated_at, last_sequence, entry_sequence:
  its state, ended_at, data, error, invoke, labels and pending as stored) leaves the row as it
  is, and its last history entry holds the moved values (to_state, time, sequence and the
  `entry_sequence` column, migration 0023): readers fold the newest such entry into the row
  (machine_rows.py `FOLDED`; the poller, sqlite_poll.py). One b-tree page an event, the
  entry's, where rewriting the row wrote two (100 events of benchmarks/step_floor.py's cycle:
  2.35 WAL frames an event before, 1.36 after). Any other event rewrites the row, assigning
  the indexed state and ended_at only when they change (SQLite rewrites an index entry for
  every column assigned, whatever the value: two WAL pages more);
- the history rows, the timers dropped and the timers set of the batches written,
  each one `executemany` for the group, in the transaction's way's order. A batch written
  at once (`write_now`: one instance's event, alone) takes `write_one`, the same checks and
  rows without the group's lists (callgrind, step_floor's cycle machine: 170k -> 158k
  instructions an event on the loop's thread). There a batch of one entry that looks like it
  only moves its instance is first written by one statement, its entry inserted from the
  instance's row with the row's checks in the INSERT's WHERE (`_fold_one`): no row read back
  into Python; when it inserts nothing, the batch goes on as above.

SQLite does not check the history and timer rows' reference to their instance (`checked`, as
sqlite_turns.py's rows): `_apply` found the instance's row in the same transaction before any
row of it is written, and the foreign key check was one more lookup of that row per row, and
a `PRAGMA foreign_keys` each time the write connection went from turns to instances or back.

A batch refused by its row (a lost lease, a moved-on base, an unknown instance) is
answered UNWRITTEN: the group commit writes it alone the transaction's way, which refuses it
with the usual error (LeaseLost, or ValueError). A group naming one instance twice goes that
way whole, and so does a statement SQLite refuses (a duplicate history entry): rolled back with
everything before it, the transaction's way finds whose batch it was.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentrun.storage import schema as db
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.machine_base import (
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    TimerRecord,
)

if TYPE_CHECKING:
    from agentrun.storage.sqldb_sqlite import SqliteDatabase

__all__ = ["SqliteInstanceWriter", "write_instances"]

_dumps = db.json_text
_ACTIVE = InstanceState.ACTIVE


class SqliteInstanceWriter:
    """The instance group commit's `direct` writer on SQLite (see module doc)."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        # Whether the database's writes at once wait for the loop to go round (`write_now`).
        self.streak_spent = database.streak_spent

    async def prepare(self) -> None:
        """Nothing to prepare: sqlite3's statement cache keeps each statement compiled."""

    def write_now(self, batch: MachineBatch) -> bool:
        """Writes `batch` alone, now, without a coroutine, when the group commit would write
        it alone on the loop's thread anyway (`SqliteDatabase.write_now`; the caller checks
        its writer's queue). Whether it was written; False: nothing written (not now, stale,
        refused, unavailable): the group commit takes it, and gives its caller the usual
        outcome."""
        done = self._database.write_now(functools.partial(write_one, batch), checked=True)
        return done is not None and done[0]

    async def __call__(self, batches: Sequence[MachineBatch]) -> list[Any] | None:
        """Each batch's result (None: written, UNWRITTEN: not written), or None when the
        group names an instance twice or SQLite refused a statement (nothing written).
        StoreError when the database is unavailable."""
        if len(batches) > 1 and len({b.instance.id for b in batches}) < len(batches):
            return None
        try:
            written = await self._database.turn_transaction(
                functools.partial(write_instances, batches), items=len(batches), checked=True
            )
        except sqlite3.Error:
            return None  # rolled back: the transaction's way finds whose batch it was
        return [None if yes else UNWRITTEN for yes in written]


def write_instances(batches: Sequence[MachineBatch], conn: sqlite3.Connection) -> list[bool]:
    """Writes `batches` (of distinct instances) inside the caller's transaction; for each,
    whether it was written (its instance exists, its fence and base hold)."""
    written: list[bool] = []
    history: list[tuple[Any, ...]] = []
    drop_one: list[tuple[str, str]] = []
    drop_all: list[tuple[str]] = []
    timers: list[tuple[Any, ...]] = []
    for batch in batches:
        rows = _apply(batch, conn)
        written.append(rows is not None)
        if rows is None:
            continue
        history += rows
        rec = batch.instance
        if batch.timers is not None:
            drop_all.append((rec.id,))
            timers += map(_timer, batch.timers)
        elif batch.fired is not None:
            drop_one.append((rec.id, batch.fired))
        timers += map(_timer, batch.added)
    if history:
        conn.executemany(_INSERT_HISTORY, history)
    if drop_one:
        conn.executemany(_DROP_TIMER, drop_one)
    if drop_all:
        conn.executemany(_DROP_TIMERS, drop_all)
    if timers:
        conn.executemany(_INSERT_TIMERS, timers)
    return written


def write_one(batch: MachineBatch, conn: sqlite3.Connection) -> bool:
    """`write_instances` for one batch (a write at once, `write_now`): the same checks and
    rows (`_apply`), without the group's lists and their `executemany`s (the hottest path:
    one instance's events, each written alone). An event that looks like it only moves its
    instance is tried first as one statement (`_fold_one`)."""
    entries = batch.history
    if (
        len(entries) == 1
        and batch.base is None
        and entries[0].assigned is None
        and entries[0].actions is None
        and _fold_one(batch, entries[0], conn)
    ):
        _write_timers(batch, conn)
        return True
    rows = _apply(batch, conn)
    if rows is None:
        return False
    if len(rows) == 1:
        conn.execute(_INSERT_HISTORY, rows[0])
    elif rows:
        conn.executemany(_INSERT_HISTORY, rows)
    _write_timers(batch, conn)
    return True


def _write_timers(batch: MachineBatch, conn: sqlite3.Connection) -> None:
    """`write_one`'s timer rows: those dropped, then those set."""
    timers = batch.timers
    if timers is not None:
        conn.execute(_DROP_TIMERS, (batch.instance.id,))
    elif batch.fired is not None:
        conn.execute(_DROP_TIMER, (batch.instance.id, batch.fired))
    if timers or batch.added:
        conn.executemany(_INSERT_TIMERS, [*map(_timer, timers or ()), *map(_timer, batch.added)])


def _fold_one(batch: MachineBatch, tail: HistoryRecord, conn: sqlite3.Connection) -> bool:
    """A batch of one entry (`tail`, no base) written as one statement when it only moves its
    instance (`_apply`'s folding terms): its entry inserted from the instance's row, only if
    that row is ACTIVE, holds the batch's fence, is behind the entry's sequence and has the
    values the record leaves as they are (`_FOLD`, `_FOLD_FENCED`). Whether it was written;
    False: nothing written (`_apply` then sorts the batch out: stale, unknown, or a row to
    rewrite).

    The terms `_apply` checks on the row read first, but in the INSERT's own WHERE: no row
    read back into Python, no second statement (sqlite3, ~4-5 µs of CPU an event of
    benchmarks/step_floor.py's cycle on /dev/shm, of ~26). The one term left to the history's
    key is "past every stored entry": an instance's sequences run from 1 without a gap (each
    entry is the one before's + 1), so an entry whose sequence is not past the newest one
    collides with a stored entry, and SQLite refuses the statement (rolled back, as any
    refused statement: the transaction's way finds it stale). Reading the newest entry here
    would make SQLite copy the row through a temporary table first (an INSERT whose SELECT
    reads its own table), which cost about what the statement saves."""
    rec = batch.instance
    if (
        rec.state is not _ACTIVE
        or rec.ended_at is not None
        or tail.sequence != rec.last_sequence
        or tail.to_state != rec.current
        or tail.time != rec.updated_at
    ):
        return False
    fence = batch.fence
    # The values the row must hold already, in `_FOLD_KEPT`'s order.
    kept = (
        _json(rec.data),
        _json(rec.labels),
        rec.invoke_execution,
        None if rec.error is None else _dumps(rec.error),
        None if rec.pending is None else _dumps(rec.pending),
    )
    row = _history(tail, rec.entry_sequence)
    if fence is None:
        return conn.execute(_FOLD, (*row, *kept)).rowcount == 1
    return conn.execute(_FOLD_FENCED, (*row, *kept, *fence)).rowcount == 1


def _apply(batch: MachineBatch, conn: sqlite3.Connection) -> list[tuple[Any, ...]] | None:
    """One batch's checks and instance row, for both ways: None when it is not written (an
    unknown instance, a fence or base that does not hold: nothing of it); else its history
    rows to insert, the instance's UPDATE already run if the row must change."""
    rec = batch.instance
    stored = conn.execute(_STORED, (rec.id,)).fetchone()
    if stored is None:
        return None  # unknown
    state, ended_at, data, error, invoke, labels, pending, owner, epoch, row_last, newest = stored
    fence, base = batch.fence, batch.base
    last = row_last if newest is None or newest < row_last else newest
    if (fence is not None and (owner, epoch) != fence) or (base is not None and last != base):
        return None  # stale
    entries = batch.history
    tail = entries[-1] if entries else None
    # Whether only current, updated_at, last_sequence and entry_sequence moved, and the last
    # entry gives a reader them (its to_state, time and sequence, past every stored entry):
    # then the row is left as it is (readers fold the entry in). The cheap terms first: most
    # events leave error, invoke and pending None, so only data and labels are encoded.
    if (
        tail is not None
        and rec.state is _ACTIVE
        and rec.ended_at is None
        and state == _ACTIVE
        and tail.sequence == rec.last_sequence
        and tail.sequence > last
        and tail.to_state == rec.current
        and tail.time == rec.updated_at
        and rec.invoke_execution == invoke
        and (None if rec.error is None else _dumps(rec.error)) == error
        and (None if rec.pending is None else _dumps(rec.pending)) == pending
        and _json(rec.data) == data
        and _json(rec.labels) == labels
    ):
        if len(entries) == 1:
            return [_history(tail, rec.entry_sequence)]
        return [*map(_history, entries[:-1]), _history(tail, rec.entry_sequence)]
    values = _changes(rec)
    if state == rec.state._value_ and ended_at == rec.ended_at:
        conn.execute(_UPDATE_KEPT, (*values, rec.id))  # the indexed columns as they are
    else:
        conn.execute(_UPDATE_ALL, (*values, rec.state._value_, rec.ended_at, rec.id))
    return [*map(_history, entries)]


def _json(value: Any) -> str | None:
    """The `Json` column's encoding on SQLite (`schema.JsonText`: json.dumps' text, through
    `schema.json_text`'s encoder built once); None is NULL."""
    return None if value is None else _dumps(value)


# The columns an event changes (machine_rows.MUTABLE) that are in no index, in `_changes`'
# order; the other two, state and ended_at, are assigned only when they change (`_UPDATE_ALL`;
# tests/storage check the split).
_CHANGED = (
    "current",
    "data",
    "error",
    "updated_at",
    "last_sequence",
    "entry_sequence",
    "invoke_execution",
    "labels",
    "pending",
)


def _changes(r: InstanceRecord) -> tuple[Any, ...]:
    """`_CHANGED`'s values (the UPDATE's first parameters)."""
    return (
        r.current,
        _json(r.data),
        _json(r.error),
        r.updated_at,
        r.last_sequence,
        r.entry_sequence,
        r.invoke_execution,
        _json(r.labels),
        _json(r.pending),
    )


_SET_CHANGED = ", ".join(f'"{name}" = ?' for name in _CHANGED)
# What a batch is checked against, read under the transaction's write lock (BEGIN IMMEDIATE:
# no other writer moves anything before the commit, so checking here holds as an UPDATE's
# WHERE would): the indexed state and ended_at; the columns a batch may leave as they are, in
# `_changes`' order (data, error, invoke_execution, labels, pending); the lease; the row's
# last_sequence and its newest entry's sequence (the instance's last one is the greater). The
# history's key (instance_id, sequence) refuses a second entry of a sequence besides.
_STORED = (
    'SELECT "state", "ended_at", "data", "error", "invoke_execution", "labels", "pending", '
    '"owner", "lease_epoch", "last_sequence", (SELECT max("sequence") FROM sm_history '
    "WHERE instance_id = ?1) FROM sm_instances WHERE id = ?1"
)
# The row rewritten: `_CHANGED`, and the indexed state and ended_at only when they change.
_UPDATE_KEPT = f"UPDATE sm_instances SET {_SET_CHANGED} WHERE id = ?"
_UPDATE_ALL = f'UPDATE sm_instances SET {_SET_CHANGED}, "state" = ?, "ended_at" = ? WHERE id = ?'


# In `_history`'s order (tests/storage check it is the table's).
_HISTORY_COLUMNS = (
    "instance_id",
    "sequence",
    "kind",
    "time",
    "event",
    "event_id",
    "event_data",
    "from_state",
    "to_state",
    "transition_index",
    "actions",
    "assigned",
    "instance_state",
    "error",
    "reentered",
    "entry_sequence",
)


def _history(e: HistoryRecord, entry_sequence: int | None = None) -> tuple[Any, ...]:
    """A history entry's row, in `_HISTORY_COLUMNS`' order; `entry_sequence`: the instance's,
    on the last entry of a batch that left its row as it was."""
    return (
        e.instance_id,
        e.sequence,
        e.kind._value_,  # the enum's value without its property (a Python call each)
        e.time,
        e.event,
        e.event_id,
        None if e.event_data is None else _dumps(e.event_data),
        e.from_state,
        e.to_state,
        e.transition_index,
        None if e.actions is None else _dumps(e.actions),
        None if e.assigned is None else _dumps(e.assigned),
        e.instance_state._value_,
        None if e.error is None else _dumps(e.error),
        1 if e.reentered else 0,
        entry_sequence,
    )


def _timer(t: TimerRecord) -> tuple[Any, ...]:
    return (t.instance_id, t.key, t.state, t.index, t.fire_at)


_INSERT_HISTORY = "INSERT INTO sm_history ({}) VALUES ({})".format(
    ", ".join(f'"{name}"' for name in _HISTORY_COLUMNS), ", ".join("?" * len(_HISTORY_COLUMNS))
)
# `_fold_one`'s statement: the entry (`_HISTORY_COLUMNS`, ?1 its instance id and ?2 its
# sequence) inserted only if the instance's row is ACTIVE, behind ?2 and holds the values an
# event that only moves it leaves as they are (`_FOLD_KEPT`, compared as `_apply` compares
# them: NULL for None, the JSON columns' text); `_FOLD_FENCED` also its fence (owner, epoch).
_FOLD_KEPT = ("data", "labels", "invoke_execution", "error", "pending")
_FOLD_TERMS = [
    "\"state\" = 'ACTIVE'",
    "last_sequence < ?2",
    *(f'"{name}" IS ?{len(_HISTORY_COLUMNS) + i}' for i, name in enumerate(_FOLD_KEPT, 1)),
]
_FOLD = "INSERT INTO sm_history ({}) SELECT {} FROM sm_instances WHERE id = ?1 AND {}".format(
    ", ".join(f'"{name}"' for name in _HISTORY_COLUMNS),
    ", ".join(f"?{i}" for i in range(1, len(_HISTORY_COLUMNS) + 1)),
    " AND ".join(_FOLD_TERMS),
)
_FENCE_AT = len(_HISTORY_COLUMNS) + len(_FOLD_KEPT) + 1  # the fence's owner; its epoch next
_FOLD_FENCED = f'{_FOLD} AND "owner" IS ?{_FENCE_AT} AND lease_epoch IS ?{_FENCE_AT + 1}'
_INSERT_TIMERS = (
    'INSERT INTO sm_timers ("instance_id", "key", "state", "timer_index", "fire_at") '
    "VALUES (?, ?, ?, ?, ?)"
)
_DROP_TIMERS = "DELETE FROM sm_timers WHERE instance_id = ?"
_DROP_TIMER = "DELETE FROM sm_timers WHERE instance_id = ? AND key = ?"
