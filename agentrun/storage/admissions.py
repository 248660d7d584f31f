"""Execution admission in the store's database, shared by every process that opens it.

A root execution under a tenant quota (`max_running_executions_per_tenant`) or a workflow's
`concurrency: {key, limit}` holds a row while it runs (`running`) or waits to start. Every
decision of a tenant locks its `admission_tenants` row (PostgreSQL; SQLite's single writer
serialises them anyway), counts the running rows and writes its verdict, so replicas never
admit more than a limit between them. Rows belong to executions, not to processes: an
execution taken over by another replica keeps its place. A row whose execution ended
without giving it back (its process died in between) is deleted by `reap`.

The rules are the engine's local ones (agentrun.engine.admission): first come, first served
within a key; a start with another key is not held back by a full key; a `cancel_oldest`
start goes first in its key's line.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import Admitted, ExecutionState, ckey_of
from agentrun.storage.sqldb import SqlDatabase

__all__ = ["AdmissionTable", "Admitted", "ckey_of"]

_a = db.admissions
_TERMINAL = [s.value for s in ExecutionState if s.terminal]


class AdmissionTable:
    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    async def pending_count(self, tenant: str) -> int:
        rows = await self.database.read(
            sa.select(sa.func.count())
            .select_from(_a)
            .where(_a.c.tenant == tenant, _a.c.running == sa.false())
        )
        return int(rows[0][0])

    async def arrive(
        self,
        execution_id: str,
        tenant: str,
        ckey: str | None,
        limit: int,
        quota: int,
        on_limit: str,
    ) -> Admitted:
        def work(conn: sa.Connection) -> Admitted:
            _lock(conn, self.database, tenant)
            existing = conn.execute(
                sa.select(_a.c.running).where(_a.c.execution_id == execution_id)
            ).first()
            if existing is not None:
                return Admitted("run" if existing[0] else "queued")
            running, by_key = _running(conn, tenant, ckey)
            quota_full = bool(quota) and running >= quota
            key_full = ckey is not None and bool(limit) and by_key >= limit
            key_waits = ckey is not None and _waiting_with(conn, tenant, ckey)
            if not (quota_full or key_full or key_waits):
                _insert(conn, execution_id, tenant, ckey, limit, running=True)
                return Admitted("run")
            if on_limit == "cancel_newest" and ckey is not None and not quota_full:
                return Admitted("cancel_newest")
            if on_limit == "cancel_oldest" and ckey is not None and not quota_full:
                oldest = (
                    conn.execute(
                        sa.select(_a.c.execution_id)
                        .where(_a.c.tenant == tenant, _a.c.ckey == ckey, _a.c.running == sa.true())
                        .order_by(_a.c.execution_id)
                        .limit(1)
                    )
                    .scalars()
                    .all()
                )
                _insert(conn, execution_id, tenant, ckey, limit, running=False, rank=-1)
                return Admitted("cancel_oldest", tuple(oldest))
            _insert(conn, execution_id, tenant, ckey, limit, running=False)
            return Admitted("queued")

        return await self.database.transaction(work)

    async def resume(
        self,
        execution_id: str,
        tenant: str,
        ckey: str | None,
        limit: int,
        quota: int,
        *,
        pending: bool,
    ) -> bool:
        """An execution found in the store (a restart, a take-over): whether it may run. One
        that ran holds its place (taken back if it had none); a pending one keeps its row, or
        arrives now in the line."""
        if pending:
            return (
                await self.arrive(execution_id, tenant, ckey, limit, quota, "queue")
            ).verdict == "run"

        def work(conn: sa.Connection) -> bool:
            _lock(conn, self.database, tenant)
            row = conn.execute(
                sa.select(_a.c.running).where(_a.c.execution_id == execution_id)
            ).first()
            if row is None:
                _insert(conn, execution_id, tenant, ckey, limit, running=True)
            elif not row[0]:
                conn.execute(
                    _a.update().where(_a.c.execution_id == execution_id).values(running=True)
                )
            return True

        return await self.database.transaction(work)

    async def forget(self, execution_id: str) -> None:
        await self.database.transaction(
            lambda conn: conn.execute(_a.delete().where(_a.c.execution_id == execution_id))
        )

    async def depart(self, execution_id: str, quota: int) -> list[str]:
        """An execution ended: its place is free; returns the waiting executions admitted now."""

        def work(conn: sa.Connection) -> list[str]:
            row = conn.execute(
                sa.select(_a.c.tenant).where(_a.c.execution_id == execution_id)
            ).first()
            if row is None:
                return []
            tenant = row[0]
            _lock(conn, self.database, tenant)
            conn.execute(_a.delete().where(_a.c.execution_id == execution_id))
            return _admit_next(conn, tenant, quota)

        return await self.database.transaction(work)

    async def running_among(self, execution_ids: list[str]) -> list[str]:
        """Which of these executions hold a running place (admitted by another process)."""
        if not execution_ids:
            return []
        rows = await self.database.read(
            sa.select(_a.c.execution_id).where(
                _a.c.execution_id.in_(execution_ids), _a.c.running == sa.true()
            )
        )
        return [r[0] for r in rows]

    async def reap(self, quota: int) -> list[str]:
        """Deletes the rows of executions that ended (or are gone) without giving their place
        back; returns the waiting executions admitted in their place."""
        e = db.executions
        stale = (
            sa.select(_a.c.execution_id, _a.c.tenant)
            .select_from(_a.outerjoin(e, e.c.id == _a.c.execution_id))
            .where(sa.or_(e.c.id.is_(None), e.c.state.in_(_TERMINAL)))
        )
        rows = await self.database.read(stale)
        if not rows:
            return []

        def work(conn: sa.Connection) -> list[str]:
            admitted: list[str] = []
            for tenant in sorted({t for _, t in rows}):
                _lock(conn, self.database, tenant)
                conn.execute(
                    _a.delete().where(_a.c.execution_id.in_([i for i, t in rows if t == tenant]))
                )
                admitted += _admit_next(conn, tenant, quota)
            return admitted

        return await self.database.transaction(work)


def _lock(conn: sa.Connection, database: SqlDatabase, tenant: str) -> None:
    t = db.admission_tenants
    conn.execute(database.insert(t).values(tenant=tenant).on_conflict_do_nothing())
    conn.execute(sa.select(t.c.tenant).where(t.c.tenant == tenant).with_for_update())


def _insert(
    conn: sa.Connection,
    execution_id: str,
    tenant: str,
    ckey: str | None,
    limit: int,
    *,
    running: bool,
    rank: int = 0,
) -> None:
    conn.execute(
        _a.insert().values(
            execution_id=execution_id,
            tenant=tenant,
            ckey=ckey,
            key_limit=limit,
            running=running,
            rank=rank,
        )
    )


def _running(conn: sa.Connection, tenant: str, ckey: str | None) -> tuple[int, int]:
    rows = conn.execute(
        sa.select(_a.c.ckey, sa.func.count())
        .where(_a.c.tenant == tenant, _a.c.running == sa.true())
        .group_by(_a.c.ckey)
    ).all()
    return sum(int(n) for _, n in rows), sum(
        int(n) for k, n in rows if ckey is not None and k == ckey
    )


def _waiting_with(conn: sa.Connection, tenant: str, ckey: str) -> bool:
    return (
        conn.execute(
            sa.select(_a.c.execution_id)
            .where(_a.c.tenant == tenant, _a.c.ckey == ckey, _a.c.running == sa.false())
            .limit(1)
        ).first()
        is not None
    )


def _admit_next(conn: sa.Connection, tenant: str, quota: int) -> list[str]:
    """The waiting executions of `tenant` that fit now, in line order (the local rule)."""
    waiting = conn.execute(
        sa.select(_a.c.execution_id, _a.c.ckey, _a.c.key_limit)
        .where(_a.c.tenant == tenant, _a.c.running == sa.false())
        .order_by(_a.c.rank, _a.c.execution_id)
    ).all()
    if not waiting:
        return []
    counts: dict[Any, int] = {}
    total = 0
    for k, n in conn.execute(
        sa.select(_a.c.ckey, sa.func.count())
        .where(_a.c.tenant == tenant, _a.c.running == sa.true())
        .group_by(_a.c.ckey)
    ):
        counts[k] = int(n)
        total += int(n)
    # Each key's line, in order: only its first may start.
    lines: dict[str, deque[str]] = {}
    for execution_id, ckey, _ in waiting:
        if ckey is not None:
            lines.setdefault(ckey, deque()).append(execution_id)
    admitted: list[str] = []
    for execution_id, ckey, limit in waiting:
        if quota and total >= quota:
            break
        if ckey is not None:
            if lines[ckey][0] != execution_id or (limit and counts.get(ckey, 0) >= limit):
                continue
            lines[ckey].popleft()
        admitted.append(execution_id)
        total += 1
        counts[ckey] = counts.get(ckey, 0) + 1
    if admitted:
        conn.execute(_a.update().where(_a.c.execution_id.in_(admitted)).values(running=True))
    return admitted
