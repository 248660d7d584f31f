"""The state machine tables' rows <-> records, and the statements an instance is read with.

What the SQL store's readers (machines_sql.py), its transaction's way of commits
(machine_writes.py) and PostgreSQL's direct writer (pg_instances.py) share: the row of a new
instance, the columns a commit changes (`MUTABLE`, `instance_changes`), history and timer rows,
the records read back, and `SELECT` / `FOLDED`, an instance's row with its input and (SQLite)
its newest history entry folded in. Statements are built once, at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.machine_base import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    TimerRecord,
)

# The instance columns a commit changes (pg_instances.py writes the same).
MUTABLE = (
    "state",
    "current",
    "data",
    "error",
    "updated_at",
    "ended_at",
    "last_sequence",
    "entry_sequence",
    "invoke_execution",
    "labels",
    "pending",
)


def instance_changes(r: InstanceRecord) -> dict[str, Any]:
    return {
        "b_id": r.id,
        "state": r.state.value,
        "current": r.current,
        "data": r.data,
        "error": r.error,
        "updated_at": r.updated_at,
        "ended_at": r.ended_at,
        "last_sequence": r.last_sequence,
        "entry_sequence": r.entry_sequence,
        "invoke_execution": r.invoke_execution,
        "labels": r.labels,
        "pending": r.pending,
    }


def instance_row(r: InstanceRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant": r.tenant,
        "workflow": r.workflow,
        "version": r.version,
        "state": r.state.value,
        "current": r.current,
        "data": r.data,
        "error": r.error,
        "request_id": r.request_id,
        "request_hash": r.request_hash,
        "parent_id": r.parent_id,
        "parent_node": r.parent_node,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "ended_at": r.ended_at,
        "last_sequence": r.last_sequence,
        "entry_sequence": r.entry_sequence,
        "invoke_execution": r.invoke_execution,
        "labels": r.labels,
        "pending": r.pending,
        "owner": r.owner,
        "lease_epoch": r.lease_epoch,
        "lease_expires_at": r.lease_expires_at,
    }


# An instance's row with its input (`sm_inputs`: none when the input is None), as the readers
# read it.
SELECT = sa.select(*db.sm_instances.c, db.sm_inputs.c.input).select_from(
    db.sm_instances.outerjoin(db.sm_inputs, db.sm_inputs.c.instance_id == db.sm_instances.c.id)
)


# SQLite: an instance's row with its newest history entry, when that entry is past the row's
# last_sequence and holds the instance's entry_sequence (sqlite_instances.py wrote it in place
# of rewriting the row): its to_state, time, sequence and entry_sequence are the instance's
# current, updated_at, last_sequence and entry_sequence (`folded_record`). A primary key
# seek and lookup more per row.
_MOVED = db.sm_history.alias("moved")
# (max(), not ORDER BY ... LIMIT 1: SQLite reads max() off the key's b-tree, the other way
# walked the instance's entries; and no parameter of its own, for SqliteDatabase.executemany.)
_NEWEST = (
    sa.select(sa.func.max(db.sm_history.c.sequence))
    .where(db.sm_history.c.instance_id == db.sm_instances.c.id)
    .correlate(db.sm_instances)
    .scalar_subquery()
)
FOLDED = sa.select(
    *db.sm_instances.c,
    db.sm_inputs.c.input,
    _MOVED.c.sequence.label("moved_sequence"),
    _MOVED.c.to_state.label("moved_current"),
    _MOVED.c.time.label("moved_time"),
    _MOVED.c.entry_sequence.label("moved_entry"),
).select_from(
    db.sm_instances.outerjoin(
        db.sm_inputs, db.sm_inputs.c.instance_id == db.sm_instances.c.id
    ).outerjoin(
        _MOVED,
        sa.and_(
            _MOVED.c.instance_id == db.sm_instances.c.id,
            _MOVED.c.sequence == _NEWEST,
            _MOVED.c.sequence > db.sm_instances.c.last_sequence,
            _MOVED.c.entry_sequence.is_not(None),
        ),
    )
)
FOLDED_CURRENT = sa.func.coalesce(_MOVED.c.to_state, db.sm_instances.c.current)
# The instance's last sequence as `FOLDED` reads it (SQLite's scalar max), for a base.
FOLDED_LAST = sa.func.max(
    db.sm_instances.c.last_sequence, sa.func.coalesce(_NEWEST, sa.literal_column("0"))
)


def folded_record(row: Any) -> InstanceRecord:
    """The record of a row `FOLDED` read."""
    record = instance_record(row)
    if row.moved_sequence is not None:
        record.current = row.moved_current
        record.updated_at = row.moved_time
        record.last_sequence = row.moved_sequence
        record.entry_sequence = row.moved_entry
    return record


_FROM_ROW: Any = object()


def inputs_of(conn: sa.Connection, ids: Sequence[str]) -> dict[str, Any]:
    """The inputs of the instances `ids` that have one (claimed rows come back without)."""
    if not ids:
        return {}
    i = db.sm_inputs
    rows = conn.execute(sa.select(i.c.instance_id, i.c.input).where(i.c.instance_id.in_(ids)))
    return {row.instance_id: row.input for row in rows}


def instance_record(row: Any, input: Any = _FROM_ROW) -> InstanceRecord:
    """The record of a row `SELECT` read (its input with it), or of an instance row alone
    and its `input`."""
    return InstanceRecord(
        id=row.id,
        tenant=row.tenant,
        workflow=row.workflow,
        version=row.version,
        state=InstanceState(row.state),
        current=row.current,
        data=row.data if row.data is not None else {},
        input=row.input if input is _FROM_ROW else input,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        error=row.error,
        request_id=row.request_id,
        request_hash=row.request_hash,
        parent_id=row.parent_id,
        parent_node=row.parent_node,
        last_sequence=row.last_sequence,
        entry_sequence=row.entry_sequence,
        invoke_execution=row.invoke_execution,
        labels=row.labels if row.labels is not None else {},
        pending=row.pending,
        owner=row.owner,
        lease_epoch=row.lease_epoch,
        lease_expires_at=row.lease_expires_at,
    )


def history_row(e: HistoryRecord) -> dict[str, Any]:
    return {
        "instance_id": e.instance_id,
        "sequence": e.sequence,
        "kind": e.kind.value,
        "time": e.time,
        "event": e.event,
        "event_id": e.event_id,
        "event_data": e.event_data,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "transition_index": e.transition_index,
        "actions": e.actions,
        "assigned": e.assigned,
        "instance_state": e.instance_state.value,
        "error": e.error,
        "reentered": e.reentered,
    }


def history_record(row: Any) -> HistoryRecord:
    return HistoryRecord(
        instance_id=row.instance_id,
        sequence=row.sequence,
        kind=EntryKind(row.kind),
        time=row.time,
        event=row.event,
        event_id=row.event_id,
        event_data=row.event_data,
        from_state=row.from_state,
        to_state=row.to_state,
        transition_index=row.transition_index,
        actions=row.actions,
        assigned=row.assigned,
        instance_state=InstanceState(row.instance_state),
        error=row.error,
        reentered=bool(row.reentered),
    )


def timer_row(t: TimerRecord) -> dict[str, Any]:
    return {
        "instance_id": t.instance_id,
        "key": t.key,
        "state": t.state,
        "timer_index": t.index,
        "fire_at": t.fire_at,
    }
