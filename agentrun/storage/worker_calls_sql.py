"""The worker call repository on the SQL core of a `SqlStore` (SQLite or PostgreSQL): the
contract is worker_calls.py's. Every write goes through one group commit, so the calls of a
map's items, their leases and their answers share transactions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from agentrun.storage import schema as db
from agentrun.storage.group_commit import GroupCommit
from agentrun.storage.sqldb import SqlDatabase
from agentrun.storage.worker_calls import (
    DONE,
    OPEN,
    CallRecord,
    CallState,
    CallStatus,
    Claim,
    ToolDeclaration,
    ToolTaken,
    WorkerCallStore,
    WorkerRecord,
    choose,
)

__all__ = ["SqlWorkerCalls"]

_calls = db.worker_calls
T = TypeVar("T")


async def _explain(_work: Any, exc: Exception) -> BaseException:
    """A write refused on its own: the database's reason (a value it cannot hold, say)."""
    return exc if isinstance(exc, ValueError) else ValueError(f"refused by the database: {exc}")


_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord))
_WORKER_FIELDS = tuple(f.name for f in dataclasses.fields(WorkerRecord))


def _call_row(call: CallRecord) -> dict[str, Any]:
    row = {name: getattr(call, name) for name in _CALL_FIELDS}
    row["state"] = str(call.state)
    row["labels"] = dict(call.labels or {})
    return row


def _call_record(row: Any) -> CallRecord:
    values = row._mapping
    kwargs = {name: values[name] for name in _CALL_FIELDS}
    kwargs["state"] = CallState(kwargs["state"])
    kwargs["labels"] = kwargs["labels"] or {}
    return CallRecord(**kwargs)


def _worker_record(row: Any) -> WorkerRecord:
    values = row._mapping
    kwargs = {name: values[name] for name in _WORKER_FIELDS}
    kwargs["labels"] = kwargs["labels"] or {}
    kwargs["tools"] = kwargs["tools"] or []
    return WorkerRecord(**kwargs)


class SqlWorkerCalls(WorkerCallStore):
    """The worker tables in the database of an open SqlStore (`SqlStore.database`)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database
        # A known id is left as it is.
        self._enqueue = database.insert(db.worker_calls).on_conflict_do_nothing(
            index_elements=[db.worker_calls.c.id]
        )
        # Every write goes through one group commit: the calls of a map's items, their
        # leases and answers share transactions (one fsync or WAL flush a group).
        self._writer: GroupCommit[Callable[[sa.Connection], Any]] = database.group_commit(
            self._apply, _explain, name="agentrun-worker-calls-writer"
        )

    # The statements of every call, built once (their SQL is compiled once and cached).
    _complete = (
        db.worker_calls.update()
        .where(
            db.worker_calls.c.id == sa.bindparam("call_id"),
            db.worker_calls.c.state == CallState.LEASED.value,
            db.worker_calls.c.worker_id == sa.bindparam("holder"),
            db.worker_calls.c.lease_expires >= sa.bindparam("now"),
        )
        .values(
            state=sa.bindparam("state"),
            result=sa.bindparam("result", type_=db.Json),
            error=sa.bindparam("error", type_=db.Json),
            updated_at=sa.bindparam("updated_at"),
        )
    )

    def _apply(
        self, conn: sa.Connection, works: Sequence[Callable[[sa.Connection], Any]]
    ) -> list[Any]:
        if not self._db.sqlite:
            # Call rows are working state: a crash loses the attempts waiting on them anyway,
            # and the engine's own (synchronous) commits flush these with them.
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        return [work(conn) for work in works]

    async def _write(self, work: Callable[[sa.Connection], T]) -> T:
        return await self._writer.submit(work)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._writer.close()
        self._writer.reopen()

    async def declare_tools(self, tenant: str, tools: Sequence[ToolDeclaration]) -> None:
        t = db.worker_tools
        names = [tool.name for tool in tools]

        def write(conn: sa.Connection) -> None:
            owners = conn.execute(sa.select(t.c.name, t.c.tenant).where(t.c.name.in_(names))).all()
            for name, owner in owners:
                if owner != tenant:
                    raise ToolTaken(name)
            for tool in tools:
                row = {
                    "name": tool.name,
                    "tenant": tenant,
                    "definition": tool.definition,
                    "updated_at": tool.updated_at,
                }
                statement = self._db.insert(t).values(row)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[t.c.name],
                        set_={
                            "definition": statement.excluded.definition,
                            "updated_at": statement.excluded.updated_at,
                        },
                    )
                )

        await self._db.retry_unique(write)

    async def list_tools(self) -> list[ToolDeclaration]:
        t = db.worker_tools
        rows = await self._db.read(sa.select(t).order_by(t.c.name))
        return [ToolDeclaration(r.name, r.tenant, r.definition or {}, r.updated_at) for r in rows]

    async def add_worker(self, record: WorkerRecord) -> None:
        row = {name: getattr(record, name) for name in _WORKER_FIELDS}
        await self._write(lambda conn: conn.execute(db.workers.insert(), row))

    async def update_worker(
        self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None
    ) -> None:
        values: dict[str, Any] = {}
        if heartbeat_at is not None:
            values["heartbeat_at"] = heartbeat_at
        if state is not None:
            values["state"] = state
        if values:
            statement = db.workers.update().where(db.workers.c.id == worker_id).values(values)
            await self._write(lambda conn: conn.execute(statement))

    async def remove_worker(self, worker_id: str) -> None:
        statement = db.workers.delete().where(db.workers.c.id == worker_id)
        await self._write(lambda conn: conn.execute(statement))

    async def list_workers(
        self, tenant: str, *, seen_after: float, limit: int, after_id: str | None = None
    ) -> list[WorkerRecord]:
        w = db.workers
        query = sa.select(w).where(w.c.tenant == tenant, w.c.heartbeat_at > seen_after)
        if after_id is not None:
            query = query.where(w.c.id > after_id)
        rows = await self._db.read(query.order_by(w.c.id).limit(limit))
        return [_worker_record(r) for r in rows]

    async def active_calls(self, worker_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(worker_ids, 0)
        if not worker_ids:
            return counts
        query = (
            sa.select(_calls.c.worker_id, sa.func.count().label("n"))
            .where(
                _calls.c.state == CallState.LEASED.value, _calls.c.worker_id.in_(list(worker_ids))
            )
            .group_by(_calls.c.worker_id)
        )
        for row in await self._db.read(query):
            counts[row.worker_id] = int(row.n)
        return counts

    async def enqueue(self, call: CallRecord) -> None:
        row = _call_row(call)
        row["state"], row["updated_at"] = CallState.READY.value, call.created_at
        statement = self._enqueue
        await self._write(lambda conn: conn.execute(statement, row))

    async def get_calls(self, ids: Sequence[str]) -> list[CallRecord]:
        if not ids:
            return []
        rows = await self._db.read(sa.select(_calls).where(_calls.c.id.in_(list(ids))))
        return [_call_record(r) for r in rows]

    async def changes(self, caller: str, *, since: float, now: float) -> list[CallStatus]:
        c = _calls
        query = sa.select(c.c.id, c.c.state, c.c.lease_expires, c.c.progress).where(
            c.c.caller == caller,
            sa.or_(
                sa.and_(c.c.state.in_(DONE), c.c.updated_at >= since),
                sa.and_(
                    c.c.state == CallState.LEASED.value,
                    sa.or_(c.c.lease_expires < now, c.c.progress.is_not(None)),
                ),
            ),
        )
        rows = await self._db.read(query)
        return [CallStatus(r.id, CallState(r.state), r.lease_expires, r.progress) for r in rows]

    async def waiting(self, execution_id: str) -> list[CallRecord]:
        query = sa.select(_calls).where(
            _calls.c.execution_id == execution_id, _calls.c.state == CallState.READY.value
        )
        return [_call_record(r) for r in await self._db.read(query)]

    async def claim(self, claim: Claim, *, now: float, lease_until: float) -> list[CallRecord]:
        tools = [name for name, free in claim.free.items() if free > 0]
        if not tools or claim.total <= 0:
            return []
        c = _calls
        query = (
            sa.select(c.c.id, c.c.tool, c.c.labels, c.c.caller_expires, c.c.deadline)
            .where(
                c.c.state == CallState.READY.value,
                c.c.tenant == claim.tenant,
                c.c.tool.in_(tools),
                c.c.caller_expires >= now,
                sa.or_(c.c.deadline.is_(None), c.c.deadline > now),
            )
            .order_by(c.c.created_at, c.c.id)
        )
        if self._db.sqlite:
            # Labels are matched below: enough rows to fill the slots past calls whose labels
            # this worker lacks (SQLite has one writer: nothing is locked meanwhile).
            query = query.limit(claim.total * 4 + 50)
        else:
            # Only calls whose labels the worker offers (JSONB containment), no more rows than
            # it can take, and rows another replica is leasing right now skipped, not waited for.
            offered = sa.cast(sa.literal(db.jsonb_dumps(dict(claim.labels))), JSONB)
            query = (
                query.where(c.c.labels.op("<@")(offered))
                .limit(claim.total)
                .with_for_update(skip_locked=True)
            )

        def lease(conn: sa.Connection) -> list[CallRecord]:
            taken = choose(conn.execute(query).all(), claim, now)
            if not taken:
                return []
            rows = conn.execute(
                c.update()
                .where(c.c.id.in_([row.id for row in taken]), c.c.state == CallState.READY.value)
                .values(
                    state=CallState.LEASED.value,
                    worker_id=claim.worker_id,
                    lease_expires=lease_until,
                    updated_at=now,
                )
                .returning(*c.columns)
            ).all()
            return sorted((_call_record(r) for r in rows), key=lambda r: (r.created_at, r.id))

        return await self._write(lease)

    async def renew(self, worker_id: str, *, now: float, lease_until: float) -> set[str]:
        c = _calls
        statement = (
            c.update()
            .where(
                c.c.worker_id == worker_id,
                c.c.state == CallState.LEASED.value,
                c.c.lease_expires >= now,
            )
            .values(lease_expires=lease_until)
            .returning(c.c.id)
        )
        return await self._write(lambda conn: {row.id for row in conn.execute(statement)})

    async def complete(
        self,
        call_id: str,
        worker_id: str,
        *,
        now: float,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        params = {
            "call_id": call_id,
            "holder": worker_id,
            "now": now,
            "updated_at": now,
            "state": CallState.FAILED.value if error is not None else CallState.SUCCEEDED.value,
            "result": None if error is not None else result,
            "error": error,
        }
        statement = self._complete
        return bool(await self._write(lambda conn: conn.execute(statement, params).rowcount))

    async def report_progress(self, call_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
        c = _calls
        statement = (
            c.update()
            .where(
                c.c.id == call_id, c.c.state == CallState.LEASED.value, c.c.worker_id == worker_id
            )
            .values(progress=progress)
        )
        return bool(await self._write(lambda conn: conn.execute(statement).rowcount))

    async def release(
        self, worker_id: str, *, now: float, error: dict[str, Any]
    ) -> list[CallRecord]:
        c = _calls
        statement = (
            c.update()
            .where(c.c.worker_id == worker_id, c.c.state == CallState.LEASED.value)
            .values(state=CallState.FAILED.value, error=error, updated_at=now)
            .returning(*c.columns)
        )
        return await self._write(lambda conn: [_call_record(r) for r in conn.execute(statement)])

    async def expire(self, ids: Sequence[str], *, now: float, error: dict[str, Any]) -> list[str]:
        if not ids:
            return []
        c = _calls
        statement = (
            c.update()
            .where(
                c.c.id.in_(list(ids)), c.c.state == CallState.LEASED.value, c.c.lease_expires < now
            )
            .values(state=CallState.FAILED.value, error=error, updated_at=now)
            .returning(c.c.id)
        )
        return await self._write(lambda conn: [r.id for r in conn.execute(statement)])

    async def cancel(self, call_id: str, *, now: float, error: dict[str, Any]) -> CallRecord | None:
        c = _calls
        statement = (
            c.update()
            .where(c.c.id == call_id, c.c.state.in_(OPEN))
            .values(state=CallState.CANCELLED.value, error=error, updated_at=now)
            .returning(*c.columns)
        )
        rows = await self._write(lambda conn: conn.execute(statement).all())
        return _call_record(rows[0]) if rows else None

    async def keep_callers(self, caller: str, *, until: float) -> None:
        c = _calls
        statement = (
            c.update().where(c.c.caller == caller, c.c.state.in_(OPEN)).values(caller_expires=until)
        )
        await self._write(lambda conn: conn.execute(statement))

    async def sweep(
        self, *, now: float, keep_seconds: float, worker_seen_after: float
    ) -> list[CallRecord]:
        c = _calls
        gone = {"type": "cancelled", "message": "nobody waits for the call any more", "details": {}}

        def work(conn: sa.Connection) -> list[CallRecord]:
            orphans = conn.execute(
                c.update()
                .where(c.c.state.in_(OPEN), c.c.caller_expires < now)
                .values(state=CallState.CANCELLED.value, error=gone, updated_at=now)
                .returning(*c.columns)
            ).all()
            conn.execute(c.delete().where(c.c.state.in_(DONE), c.c.updated_at < now - keep_seconds))
            conn.execute(db.workers.delete().where(db.workers.c.heartbeat_at < worker_seen_after))
            return [_call_record(r) for r in orphans]

        return await self._write(work)
