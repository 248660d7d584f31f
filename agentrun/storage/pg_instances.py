"""State machine instance commits on PostgreSQL in one round trip, as execution turns are.

Through SQLAlchemy's asyncpg adapter a group of instance commits cost six round trips or more
(BEGIN, the fence's SELECT ... FOR UPDATE, an UPDATE per instance whose batch names its base
sequence, the history INSERT, timer DELETEs and INSERT, COMMIT), and the engine's `pg_notify`
one more after it. Here the group is one prepared
statement on the instance writer's own connection (pg_turns.py has the machinery: arrays per
column, `unnest`, `fetch_direct`), committed when it ends: one round trip, one WAL flush.

The statement, in the order its parts see each other:
- `locked`: the group's instance rows whose fence holds (owner and epoch, when the batch has a
  fence) and whose `last_sequence` is the batch's base (when it has one), locked `FOR UPDATE`
  in id order, as renewals lock them (no deadlock between the two); a row another transaction
  changes meanwhile is re-checked on its newest version;
- `upd`: the instance UPDATEs, of locked rows only;
- the history INSERT and its NOTIFY (`events:ID`, as an execution's events are announced:
  Watch streams on other replicas read the new entries; none in the quiet variant, run while
  no other replica listens: notifications.py), the timers dropped (all of an instance whose timers are replaced, or the
  one that fired) and the timers set (upserted, as the memory store sets them by key), of the
  instances `upd` wrote and nothing of the others.

A group of one batch with one history entry (one instance's event: nearly every commit of an
instance that is not one of many busy at once) takes the statement's `one` variant: one row of
scalar parameters (`VALUES`) where the group's are arrays (`unnest`), built straight from the
records (`_one_args`). asyncpg encodes a scalar in a fraction of what an array of one costs
(each array is type-checked against the abc collections, ~140 isinstance calls an event, sized
and buffered), and the rows need no dict per row and list per column first: the process's CPU
per event of step_floor's cycle machine went from 139-152 to 106-120 µs. Its one row needs no
`locked` CTE: the UPDATE's own WHERE holds the fence and the base (one row lock: no order to
keep). Its timers, when it has any, are arrays as in the group's.

A stale batch (a lost lease, another writer's newer sequence, an instance that does not exist)
writes nothing while its neighbours commit: it is answered UNWRITTEN and the group commit
writes it alone the transaction's way, which refuses it with the usual error (LeaseLost, or
ValueError). A group naming one instance twice goes that way whole, and so does a statement
PostgreSQL refuses (a duplicate history entry: nothing was written).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.machine_base import HistoryRecord, InstanceRecord, MachineBatch
from agentrun.storage.machine_rows import MUTABLE, history_row, instance_changes, timer_row
from agentrun.storage.pg_turns import (
    FENCE,
    announce,
    array_columns,
    fenced_update,
    fetch_direct,
    unnest,
    unnests,
)

if TYPE_CHECKING:
    from agentrun.storage.sqldb_postgres import PostgresDatabase

__all__ = ["InstanceWriter"]

log = logging.getLogger("agentrun.storage")

# Not `entry_sequence` (NULL): it is for commits that leave the instance's row as it was, and
# these always rewrite it (machine_tables.py).
_HISTORY = tuple(c.name for c in db.sm_history.c if c.name != "entry_sequence")
_TIMERS = tuple(c.name for c in db.sm_timers.c)
_jsonb = db.jsonb_dumps
# After the fence: whether the batch has a base sequence, and which.
_LEAD = (*FENCE, ("b_based", "bool"), ("b_base", "int8"))


class InstanceWriter:
    """The instance group commit's `direct` writer on PostgreSQL (see module doc)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    async def __call__(self, batches: Sequence[MachineBatch]) -> list[Any] | None:
        """Each batch's result (None: written, UNWRITTEN: not written), or None when the
        group names an instance twice or PostgreSQL refused the statement (nothing written).
        StoreError when the database is unreachable."""
        if len(batches) == 1 and len(batches[0].history) == 1:
            batch = batches[0]
            timers, args = _one_args(batch)
            row = await fetch_direct(
                self._database,
                _statement(timers, True, True),
                args,
                "instances",
                _statement(timers, False, True),
            )
            if row is None:
                return None
            return [None if row[0] else UNWRITTEN]
        ids = [batch.instance.id for batch in batches]
        if len(set(ids)) < len(ids):
            return None
        timers, args = _params(batches)
        row = await fetch_direct(
            self._database, _statement(timers), args, "instances", _statement(timers, False)
        )
        if row is None:
            return None
        written = set(row[0] or ())
        return [None if id_ in written else UNWRITTEN for id_ in ids]

    async def prepare(self) -> None:
        """Connects and prepares the statement (when the machine store opens); a failure
        waits for the first commit, which connects again."""
        import asyncpg

        try:
            for timers in (False, True):
                for notify in (True, False):
                    for one in (True, False):
                        await self._database.writer_prepare(
                            _statement(timers, notify, one), writer="instances"
                        )
        except (StoreError, asyncpg.PostgresError):
            log.warning("could not prepare the instance writer", exc_info=True)


def _params(batches: Sequence[MachineBatch]) -> tuple[bool, list[Any]]:
    """Whether the group changes timers, and the statement's arguments: instance changes with
    their fences and bases, history rows, and when it does, the timers set, instances whose
    timers are all replaced, timers that fired."""
    changes: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    timers: list[dict[str, Any]] = []
    replaced: list[str] = []
    fired: list[tuple[str, str]] = []
    for batch in sorted(batches, key=lambda b: b.instance.id):
        row = instance_changes(batch.instance)
        row["b_fenced"] = batch.fence is not None
        row["b_owner"], row["b_epoch"] = batch.fence if batch.fence is not None else (None, None)
        row["b_based"] = batch.base is not None
        row["b_base"] = batch.base
        changes.append(row)
        history += (history_row(entry) for entry in batch.history)
        if batch.timers is not None:
            replaced.append(batch.instance.id)
            timers += (timer_row(t) for t in batch.timers)
        elif batch.fired is not None:
            fired.append((batch.instance.id, batch.fired))
        timers += (timer_row(t) for t in batch.added)
    args: list[Any] = [[row[name] for row in changes] for name, _ in _LEAD]
    args += array_columns(db.sm_instances, MUTABLE, changes)
    args += array_columns(db.sm_history, _HISTORY, history)
    if not (timers or replaced or fired):
        return False, args
    args += array_columns(db.sm_timers, _TIMERS, timers)
    args += [replaced, [i for i, _ in fired], [k for _, k in fired]]
    return True, args


def _one_args(batch: MachineBatch) -> tuple[bool, list[Any]]:
    """`_params` of a group of `batch` alone, whose history is one entry, for the statement's
    `one` variant: each instance and history parameter the scalar its array would hold (in
    `_LEAD`, MUTABLE and `_HISTORY` order: tests/storage compare both), the timers' as
    `_params` builds them."""
    fence, base = batch.fence, batch.base
    owner, epoch = fence if fence is not None else (None, None)
    args = [batch.instance.id, fence is not None, owner, epoch, base is not None, base]
    args += _instance_values(batch.instance)
    args += _history_values(batch.history[0])
    if batch.timers is None and batch.fired is None and not batch.added:
        return False, args
    rec_id = batch.instance.id
    timers = [timer_row(t) for t in (*(batch.timers or ()), *batch.added)]
    args += array_columns(db.sm_timers, _TIMERS, timers)
    replaced = [rec_id] if batch.timers is not None else []
    fired = batch.fired if batch.timers is None else None
    args += [replaced, [rec_id] if fired is not None else [], [fired] if fired is not None else []]
    return True, args


def _json(value: Any) -> str | None:
    """A JSON column's parameter (text, cast to jsonb by the statement), as `array_columns`
    converts it."""
    return None if value is None else _jsonb(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _instance_values(r: InstanceRecord) -> list[Any]:
    """MUTABLE's values of `r`, as `array_columns` converts them."""
    return [
        r.state._value_,
        r.current,
        _json(r.data),
        _json(r.error),
        float(r.updated_at),
        _float(r.ended_at),
        r.last_sequence,
        r.entry_sequence,
        r.invoke_execution,
        _json(r.labels),
        _json(r.pending),
    ]


def _history_values(e: HistoryRecord) -> list[Any]:
    """`_HISTORY`'s values of `e`, as `array_columns` converts them."""
    return [
        e.instance_id,
        e.sequence,
        e.kind._value_,
        float(e.time),
        e.event,
        e.event_id,
        _json(e.event_data),
        e.from_state,
        e.to_state,
        e.transition_index,
        _json(e.actions),
        _json(e.assigned),
        e.instance_state._value_,
        _json(e.error),
        e.reentered,
    ]


@functools.cache
def _statement(timers: bool, notify: bool = True, one: bool = False) -> str:
    """The one statement of an instance group (see the module doc); its result is the ids of
    the instances written. Without `timers` (no batch of the group sets, replaces or fires a
    timer: most events of most machines), it has no timer CTEs nor their 8 parameters.
    Without `notify`, the quiet writer's variant (notifications.py): no NOTIFY. `one`: the
    variant of one batch with one history entry, its instance and entry scalar parameters
    (`_one_args`)."""
    parts, first = unnests(
        (db.sm_instances, MUTABLE, "b", _LEAD),
        (db.sm_history, _HISTORY, "h", ()),
        (db.sm_timers, _TIMERS, "t", ()),
    )
    (b_from, b_values), (h_from, h_values), (t_from, t_values) = parts
    if one:
        # One row of the scalars the arrays would hold, at the same parameter numbers.
        b_from = unnest(db.sm_instances, MUTABLE, 1, "b", _LEAD, scalar=True)[0]
        h_first = 1 + len(_LEAD) + len(MUTABLE)
        h_from = unnest(db.sm_history, _HISTORY, h_first, "h", scalar=True)[0]
    # A batch computed from a sequence is refused once the stored one moved on.
    based = "NOT b.b_based OR r.last_sequence = b.b_base"
    updates = ", ".join(f'"{n}" = {v}' for n, v in zip(MUTABLE, b_values, strict=True))
    keys = {c.name for c in db.sm_timers.primary_key.columns}
    timer_set = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in _TIMERS if n not in keys)
    replaced, fired_ids, fired_keys = first, first + 1, first + 2
    timer_ctes = f""", timers AS MATERIALIZED (
    SELECT {", ".join(t_values)} FROM {t_from}
    WHERE t.instance_id IN (SELECT id FROM upd)
), dropped AS (
    DELETE FROM sm_timers
    WHERE sm_timers.instance_id IN (SELECT id FROM upd)
        AND (sm_timers.instance_id = ANY(${replaced}::text[])
            OR (sm_timers.instance_id, sm_timers.key) IN (
                SELECT * FROM unnest(${fired_ids}::text[], ${fired_keys}::text[])))
        AND (sm_timers.instance_id, sm_timers.key) NOT IN (SELECT instance_id, key FROM timers)
), timers_set AS (
    INSERT INTO sm_timers ({", ".join(f'"{n}"' for n in _TIMERS)})
    SELECT * FROM timers
    ON CONFLICT (instance_id, key) DO UPDATE SET {timer_set}
)"""
    announced = f""", announced AS (
    {announce("SELECT DISTINCT instance_id AS id FROM history")}
)"""
    # One row: the UPDATE's own WHERE is the fence and the base (re-checked on the row's newest
    # version when another transaction changed it meanwhile, as `locked` re-checks it); with
    # no other row to lock, there is no order to keep. Without the group's `b` and `locked`
    # CTEs (materialized, joined), a statement on the server and back took 98-119 µs, not
    # 126-132 (1,000 in a row on one connection, synchronous_commit off).
    fenced = (
        f"""upd AS (
    UPDATE sm_instances r SET {updates}
    FROM {b_from}
    WHERE r.id = b.b_id
        AND (NOT b.b_fenced OR (r.owner = b.b_owner AND r.lease_epoch = b.b_epoch))
        AND ({based})
    RETURNING r.id
)"""
        if one
        else fenced_update("sm_instances", b_from, updates, based)
    )
    return f"""
WITH {fenced}, history AS (
    INSERT INTO sm_history ({", ".join(f'"{n}"' for n in _HISTORY)})
    SELECT {", ".join(h_values)} FROM {h_from}
    WHERE h.instance_id IN (SELECT id FROM upd)
    RETURNING instance_id
){announced if notify else ""}{timer_ctes if timers else ""}
SELECT (SELECT array_agg(id) FROM upd), {"(SELECT count(*) FROM announced)" if notify else "0"}
"""
