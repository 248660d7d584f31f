"""Leases on executions in a SQL database: which replica runs each unfinished execution.

An execution is held by its owner while its own `lease_expires_at` (set when it is created or
claimed; 0 once handed back) or its owner's row in `replica_leases` (renewed every lease/3,
one row per replica) is in the future: renewing costs one row however many executions a
replica owns (docs/durability.md, "Leases"). `SqlExecutions` (executions.py) takes these
methods of the `ExecutionRepository` interface from `ExecutionLeases`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.records import ExecutionRecord, ExecutionState
from agentrun.storage.sqldb import SqlDatabase, claim_leases

__all__ = ["UNFINISHED", "ExecutionLeases"]

# The states of an execution that may still run (the values stored in `executions.state`).
UNFINISHED = [s.value for s in ExecutionState if not s.terminal]


class ExecutionLeases:
    """Claims, renewals and releases of executions' leases, and when the next lease held
    elsewhere expires, on the repository's `database`."""

    database: SqlDatabase

    async def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int = 100,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[ExecutionRecord]:
        self.database.require_open()
        t, r = db.executions, db.replica_leases
        # Replicas whose own lease just expired, locked (SKIP LOCKED: one renewing now is
        # alive) until this claim commits, so a renewal waits for it and then finds its row
        # spent. Rows spent already (0) need no lock: their replica renews the old way, every
        # execution's own lease, and those it renews are not expired here.
        dying = (
            sa.select(r.c.id)
            .where(r.c.id != owner, r.c.lease_expires_at < now, r.c.lease_expires_at > 0)
            .with_for_update(skip_locked=True)
        )
        spent = sa.select(r.c.id).where(r.c.lease_expires_at <= 0)
        # SQLite: the row takes its last sequence as readers fold it (a new owner's run
        # continues from the record the claim returns; schema.FOLDED_LAST_SEQUENCE).
        also = (
            {"last_sequence": db.FOLDED_LAST_SEQUENCE}
            if self.database.dialect == "sqlite"
            else None
        )

        def claim(conn: sa.Connection) -> list[ExecutionRecord]:
            gone = [row.id for row in conn.execute(dying)]
            x = t.c.lease_expires_at
            expired = sa.or_(
                t.c.owner.is_(None),
                x.is_(None),
                x <= 0,  # handed back
                sa.and_(
                    x < now,
                    sa.or_(
                        t.c.owner.in_(gone),
                        t.c.owner.in_(spent),
                        t.c.owner.not_in(sa.select(r.c.id)),
                    ),
                ),
            )
            # Never this replica's own by expiry: those it runs, and a late renewal must not
            # bump their epoch under its running runs (which would then stop as "lease lost").
            free = sa.and_(expired, sa.or_(t.c.owner.is_(None), t.c.owner != owner))
            if include_own:
                free = sa.or_(free, t.c.owner == owner)
            if after_id is not None:
                free = sa.and_(free, t.c.id > after_id)
            if ids is not None:
                free = sa.and_(free, t.c.id.in_(list(ids)))
            candidates = (
                sa.select(t.c.id)
                .where(t.c.state.in_(UNFINISHED), free)
                .order_by(t.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = claim_leases(
                conn, t, candidates, owner=owner, now=now, lease_seconds=lease_seconds, also=also
            )
            if gone:
                # Spent, whatever their clocks say: a replica that comes back finds out at its
                # next renewal and learns which executions it still holds.
                conn.execute(r.update().where(r.c.id.in_(gone)).values(lease_expires_at=0.0))
            return [db.execution_record(row) for row in rows]

        return await self.database.transaction(claim, leases=True)

    async def held_executions(self, owner: str) -> set[str]:
        """Ids only, through `ix_executions_state_owner` (no record is read)."""
        t = db.executions
        statement = sa.select(t.c.id).where(t.c.state.in_(UNFINISHED), t.c.owner == owner)
        return {row[0] for row in await self.database.read(statement)}

    async def renew_leases(
        self, owner: str, *, lease_seconds: float, now: float
    ) -> set[str] | None:
        """One row while this replica's lease held throughout (None: every execution it
        held, it still holds); otherwise (its first renewal, or one after its lease ran out
        and others may have claimed) every execution it owns, as ever, and its row anew."""
        self.database.require_open()
        t, r = db.executions, db.replica_leases
        until = now + lease_seconds
        extend = (
            r.update()
            .where(r.c.id == owner, r.c.lease_expires_at >= now)
            .values(lease_expires_at=until)
        )
        mine = (
            sa.select(t.c.id)
            .where(t.c.owner == owner, t.c.state.in_(UNFINISHED))
            .order_by(t.c.id)
            .with_for_update()
        )
        insert = self.database.insert(r).values(id=owner, lease_expires_at=until)
        register = insert.on_conflict_do_update(
            index_elements=[r.c.id], set_={"lease_expires_at": until}
        )

        def renew(conn: sa.Connection) -> set[str] | None:
            if conn.execute(extend).rowcount == 1:
                return None
            # Locked in id order first (as fenced commits lock them), then extended.
            ids = [row.id for row in conn.execute(mine)]
            if ids:
                conn.execute(t.update().where(t.c.id.in_(ids)).values(lease_expires_at=until))
            conn.execute(register)
            return set(ids)

        return await self.database.transaction(renew, leases=True)

    async def next_lease_expiry(self, owner: str) -> float | None:
        rows = await self.database.read(_NEXT_EXPIRY, {"b_owner": owner})
        return None if rows[0][0] is None else float(rows[0][0])

    async def release_leases(self, owner: str, execution_ids: Sequence[str] | None = None) -> None:
        self.database.require_open()
        t = db.executions
        statement = t.update().where(t.c.owner == owner).values(lease_expires_at=0.0)
        if execution_ids is not None:
            statement = statement.where(t.c.id.in_(list(execution_ids)))
        await self.database.transaction(lambda conn: conn.execute(statement), leases=True)


def _next_expiry() -> sa.Select[Any]:
    """When the first lease held by another replica than `b_owner` expires: each unfinished
    execution's own lease or its owner's (`replica_leases`), whichever is later; 0 for one
    with no owner or handed back.

    Read every lease/3 by every replica, so it reads only others' rows: three ranges of
    `ix_executions_state_owner` (no owner, owners before `b_owner`, owners after it), never
    the executions `b_owner` holds itself (idle ones can be most of them) nor finished ones.
    As one `owner != b_owner` filter, SQLite and PostgreSQL read all unfinished rows."""
    t, r = db.executions, db.replica_leases
    x, replica = t.c.lease_expires_at, r.c.lease_expires_at
    owner = sa.bindparam("b_owner", type_=sa.String())
    held = sa.case(
        (sa.or_(t.c.owner.is_(None), x.is_(None), x <= 0), 0.0),
        (sa.or_(replica.is_(None), x >= replica), x),
        else_=replica,
    ).label("held")
    ranges = (t.c.owner.is_(None), t.c.owner < owner, t.c.owner > owner)
    others = sa.union_all(
        *(
            sa.select(held)
            .select_from(t.outerjoin(r, r.c.id == t.c.owner))
            .where(t.c.state.in_(UNFINISHED), where)
            for where in ranges
        )
    ).subquery()
    return sa.select(sa.func.min(others.c.held))


_NEXT_EXPIRY = _next_expiry()
