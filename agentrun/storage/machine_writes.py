"""The transaction's way of state machine instance commits: `write_group`, the instance group
commit's `apply`, and `explain`, the error the caller of a batch it refused alone gets.

The dialects' direct writers (pg_instances.py, sqlite_instances.py) write nearly every group;
what they leave (a stale fence or base, an instance named twice in a group, a statement the
database refused) is written here, or refused with the usual error (LeaseLost, ValueError).
Its statements are built once, at import: SqliteDatabase.executemany keeps each one's
compiled form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import LeaseLost, StoreError
from agentrun.storage.machine_base import MachineBatch
from agentrun.storage.machine_rows import (
    FOLDED_LAST,
    MUTABLE,
    history_row,
    instance_changes,
    timer_row,
)
from agentrun.storage.sqldb import SqlDatabase


def write_group(database: SqlDatabase, conn: sa.Connection, group: Sequence[MachineBatch]) -> None:
    """Writes a group of batches (of distinct instances) in the writer's transaction; each
    statement through `database.executemany` (on SQLite straight to sqlite3: SQLAlchemy's
    per-statement work cost several times the statement on this hot path)."""
    many = database.executemany
    instances: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    drop_all: list[dict[str, Any]] = []
    drop_one: list[dict[str, Any]] = []
    timers: list[dict[str, Any]] = []
    fenced: list[dict[str, Any]] = []
    # SQLite counts the rows of an executemany: the fence is the update's own condition there.
    # PostgreSQL's driver does not: the fence is checked first, locking the rows in id order,
    # as renewals lock them (no deadlock between the two).
    sqlite = conn.dialect.name == "sqlite"
    leased: dict[str, dict[str, Any]] = {}
    if not sqlite:
        leases = sorted({(b.instance.id, *b.fence) for b in group if b.fence is not None})
        if leases:
            held = conn.execute(
                sa.select(db.sm_instances.c.id)
                .where(sa.tuple_(*_LEASE).in_(leases))
                .order_by(db.sm_instances.c.id)
                .with_for_update()
            ).all()
            if len(held) < len(leases):
                raise LeaseLost("an instance is leased to another replica or epoch")
    for batch in group:
        rec = batch.instance
        if batch.base is not None:
            params = {**instance_changes(rec), "b_base": batch.base}
            if sqlite and batch.fence is not None:
                params["b_owner"], params["b_epoch"] = batch.fence
            fenced.append(params)
        elif sqlite and batch.fence is not None:
            row = leased[rec.id] = instance_changes(rec)
            row["b_owner"], row["b_epoch"] = batch.fence
        else:
            instances[rec.id] = instance_changes(rec)
        history.extend(history_row(e) for e in batch.history)
        if batch.timers is not None:
            drop_all.append({"b_id": rec.id})
            timers.extend(timer_row(t) for t in batch.timers)
        elif batch.fired is not None:
            drop_one.append({"b_id": rec.id, "b_key": batch.fired})
        timers.extend(timer_row(t) for t in batch.added)
    if leased and many(conn, _UPDATE_LEASED, list(leased.values())) < len(leased):
        raise LeaseLost("an instance is leased to another replica or epoch (or gone)")
    if instances:
        changed = many(conn, _UPDATE, list(instances.values()))
        if 0 <= changed < len(instances):
            raise KeyError("a batch updates an instance that does not exist")
    for params in fenced:  # one by one: executemany has no row count on every driver
        if sqlite:  # the base against the last sequence as readers fold it (`FOLDED`)
            statement = _FOLDED_BASE_LEASED if "b_owner" in params else _FOLDED_BASE
        else:
            statement = _UPDATE_BASE_LEASED if "b_owner" in params else _UPDATE_FENCED
        if many(conn, statement, [params]) != 1:
            raise KeyError(f"instance {params['b_id']} is gone or moved on")
    many(conn, _INSERT_HISTORY, history)
    many(conn, _DROP_TIMER, drop_one)
    many(conn, _DROP_TIMERS, drop_all)
    many(conn, _INSERT_TIMERS, timers)
    if history:
        # Delivered at commit: Watch streams on other replicas read the new entries.
        database.notify_in(conn, "events", sorted({row["instance_id"] for row in history}))


async def explain(_batch: MachineBatch, exc: Exception) -> BaseException:
    """The error the caller of a batch refused alone gets."""
    if isinstance(exc, LeaseLost):
        return exc
    if isinstance(exc, (sa.exc.IntegrityError, KeyError)):
        return ValueError(f"a batch conflicts with stored rows: {getattr(exc, 'orig', exc)}")
    if isinstance(exc, ValueError):
        return exc
    return StoreError(f"commit failed: {exc!r}")


_UPDATE = (
    db.sm_instances.update()
    .where(db.sm_instances.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(name) for name in MUTABLE})
)
_UPDATE_FENCED = _UPDATE.where(db.sm_instances.c.last_sequence == sa.bindparam("b_base"))
_LEASE = (db.sm_instances.c.id, db.sm_instances.c.owner, db.sm_instances.c.lease_epoch)
_HOLDER = (
    db.sm_instances.c.owner == sa.bindparam("b_owner"),
    db.sm_instances.c.lease_epoch == sa.bindparam("b_epoch"),
)
_UPDATE_LEASED = _UPDATE.where(*_HOLDER)
_UPDATE_BASE_LEASED = _UPDATE_FENCED.where(*_HOLDER)
# SQLite: the base against the last sequence as the readers fold it (`FOLDED`).
_FOLDED_BASE = _UPDATE.where(FOLDED_LAST == sa.bindparam("b_base"))
_FOLDED_BASE_LEASED = _FOLDED_BASE.where(*_HOLDER)
# Built once: SqliteDatabase.executemany keeps each statement's compiled form.
_INSERT_HISTORY = db.sm_history.insert()
_INSERT_TIMERS = db.sm_timers.insert()
_DROP_TIMERS = db.sm_timers.delete().where(db.sm_timers.c.instance_id == sa.bindparam("b_id"))
_DROP_TIMER = db.sm_timers.delete().where(
    db.sm_timers.c.instance_id == sa.bindparam("b_id"),
    db.sm_timers.c.key == sa.bindparam("b_key"),
)
