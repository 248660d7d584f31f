"""State machine instance commits on SQLite straight through sqlite3: the instance group
commit's `direct` writer, as sqlite_turns.py is the executions'.

Through the transaction's way (`machines_sql._write_group`) each commit went through
SQLAlchemy's connection and transaction objects, a plan lookup, a dict per row and a cursor
per statement: on one instance's event path (one small group per event, on the loop's thread)
more CPU than the statements. Here the group is one transaction on the write connection's
sqlite3 handle (`SqliteDatabase.turn_transaction`), its parameters built from the records
straight into tuples (each column encoded as SQLAlchemy binds it: JSON as json.dumps text,
NULL for None, a bool as 0/1), with SQL built once:
- each batch's instance UPDATE, its fence (owner, lease epoch) and base sequence folded into
  its WHERE, its row count read: a batch whose row did not change writes nothing else. An
  event that leaves the instance ACTIVE does not assign the indexed columns (state, ended_at):
  its UPDATE holds only while the stored row is ACTIVE too, and only if it does not is a
  second one, assigning them, tried (SQLite rewrites an index entry for every column
  assigned, whatever the value: assigned on every event, they cost two WAL pages more);
- the history rows, the timers dropped and the timers set of the batches whose UPDATE held,
  each one `executemany` for the group, in the transaction's way's order.

A batch whose UPDATE changed no row (a lost lease, a moved-on base, an unknown instance) is
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

    async def prepare(self) -> None:
        """Nothing to prepare: sqlite3's statement cache keeps each statement compiled."""

    def write_now(self, batch: MachineBatch) -> bool:
        """Writes `batch` alone, now, without a coroutine, when the group commit would write
        it alone on the loop's thread anyway (`SqliteDatabase.write_now`; the caller checks
        its writer's queue). Whether it was written; False: nothing written (not now, stale,
        refused, unavailable): the group commit takes it, and gives its caller the usual
        outcome."""
        done = self._database.write_now(functools.partial(write_instances, (batch,)))
        return done is not None and done[0][0]

    async def __call__(self, batches: Sequence[MachineBatch]) -> list[Any] | None:
        """Each batch's result (None: written, UNWRITTEN: not written), or None when the
        group names an instance twice or SQLite refused a statement (nothing written).
        StoreError when the database is unavailable."""
        if len(batches) > 1 and len({b.instance.id for b in batches}) < len(batches):
            return None
        try:
            written = await self._database.turn_transaction(
                functools.partial(write_instances, batches), items=len(batches)
            )
        except sqlite3.Error:
            return None  # rolled back: the transaction's way finds whose batch it was
        return [None if yes else UNWRITTEN for yes in written]


def write_instances(batches: Sequence[MachineBatch], conn: sqlite3.Connection) -> list[bool]:
    """Writes `batches` (of distinct instances) inside the caller's transaction; for each,
    whether it was written (its instance UPDATE held)."""
    written: list[bool] = []
    history: list[tuple[Any, ...]] = []
    drop_one: list[tuple[str, str]] = []
    drop_all: list[tuple[str]] = []
    timers: list[tuple[Any, ...]] = []
    execute = conn.execute
    for batch in batches:
        rec = batch.instance
        fence, base = batch.fence, batch.base
        based, fenced = base is not None, fence is not None
        values = _changes(rec)
        key: tuple[Any, ...] = (rec.id,)
        if based:
            key += (base,)
        if fence is not None:
            key += fence
        # An event that leaves the instance ACTIVE, as stored: one UPDATE, its indexed columns
        # not assigned; otherwise (or if it was not ACTIVE) one that assigns them too.
        kept = rec.state is _ACTIVE and rec.ended_at is None
        if not (kept and execute(_update(based, fenced, True), values + key).rowcount == 1):
            indexed = (rec.state.value, rec.ended_at)
            if execute(_update(based, fenced, False), values + indexed + key).rowcount != 1:
                written.append(False)  # stale or unknown: nothing of this batch
                continue
        written.append(True)
        history += map(_history, batch.history)
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


def _json(value: Any) -> str | None:
    """The `Json` column's encoding on SQLite (`schema.JsonText`: json.dumps' text, through
    `schema.json_text`'s encoder built once); None is NULL."""
    return None if value is None else _dumps(value)


# The columns an event changes (machines_sql.MUTABLE) that are in no index, in `_changes`'
# order; the other two, state and ended_at, are assigned only when they may change (`_update`;
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


@functools.cache
def _update(based: bool, fenced: bool, kept: bool) -> str:
    """The instance UPDATE of `_CHANGED`, then (unless `kept`) of the indexed state and
    ended_at; `kept`: only while the stored instance is ACTIVE (so neither changes);
    `based`: only while the stored last_sequence is the batch's base; `fenced`: only while
    the lease is the batch's owner and epoch."""
    assigned = _SET_CHANGED if kept else f'{_SET_CHANGED}, "state" = ?, "ended_at" = ?'
    sql = f"UPDATE sm_instances SET {assigned} WHERE id = ?"
    if based:
        sql += " AND last_sequence = ?"
    if fenced:
        sql += " AND owner = ? AND lease_epoch = ?"
    if kept:
        sql += f' AND "state" = \'{_ACTIVE.value}\' AND "ended_at" IS NULL'
    return sql


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
)


def _history(e: HistoryRecord) -> tuple[Any, ...]:
    """A history entry's row, in `_HISTORY_COLUMNS`' order."""
    return (
        e.instance_id,
        e.sequence,
        e.kind.value,
        e.time,
        e.event,
        e.event_id,
        _json(e.event_data),
        e.from_state,
        e.to_state,
        e.transition_index,
        _json(e.actions),
        _json(e.assigned),
        e.instance_state.value,
        _json(e.error),
        1 if e.reentered else 0,
    )


def _timer(t: TimerRecord) -> tuple[Any, ...]:
    return (t.instance_id, t.key, t.state, t.index, t.fire_at)


_INSERT_HISTORY = "INSERT INTO sm_history ({}) VALUES ({})".format(
    ", ".join(f'"{name}"' for name in _HISTORY_COLUMNS), ", ".join("?" * len(_HISTORY_COLUMNS))
)
_INSERT_TIMERS = (
    'INSERT INTO sm_timers ("instance_id", "key", "state", "timer_index", "fire_at") '
    "VALUES (?, ?, ?, ?, ?)"
)
_DROP_TIMERS = "DELETE FROM sm_timers WHERE instance_id = ?"
_DROP_TIMER = "DELETE FROM sm_timers WHERE instance_id = ? AND key = ?"
