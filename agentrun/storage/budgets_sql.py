"""The budget ledger in a SQL store's database: `budget_spend` and `budget_holds` (see
`agentrun.storage.budgets`). On PostgreSQL the reserving transaction locks the budgets' rows,
on SQLite the single writer serialises it, so two processes on one file share budgets too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.budgets import BudgetLedger, Charge, Refusal, refusal_if_over
from agentrun.storage.sqldb import SqlDatabase

__all__ = ["SqlBudgetLedger"]


_s = db.budget_spend
_h = db.budget_holds


class SqlBudgetLedger(BudgetLedger):
    """The ledger in the store's database (see the module docstring)."""

    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    async def reserve(
        self,
        hold: str,
        owner: str,
        charges: Sequence[Charge],
        tokens: int,
        cost: float,
        *,
        now: float,
        expires_at: float,
    ) -> Refusal | None:
        charges = sorted(charges, key=lambda c: (c.scope, c.period))
        keys = [(c.scope, c.period) for c in charges]

        def work(conn: sa.Connection) -> Refusal | None:
            insert = self.database.insert(_s).values(
                [
                    {"scope": s, "period": p, "tokens": 0, "cost": 0.0, "updated_at": now}
                    for s, p in keys
                ]
            )
            conn.execute(insert.on_conflict_do_nothing())
            which = sa.tuple_(_s.c.scope, _s.c.period).in_(keys)
            spent = {
                (s, p): (int(t), float(c))
                for s, p, t, c in conn.execute(
                    sa.select(_s.c.scope, _s.c.period, _s.c.tokens, _s.c.cost)
                    .where(which)
                    .order_by(_s.c.scope, _s.c.period)
                    .with_for_update()
                )
            }
            held_in = sa.tuple_(_h.c.scope, _h.c.period).in_(keys)
            # Holds of a process that stopped renewing: charged in full, the call may have run.
            abandoned = conn.execute(
                _h.delete()
                .where(held_in, _h.c.expires_at < now)
                .returning(_h.c.scope, _h.c.period, _h.c.tokens, _h.c.cost)
            ).all()
            for s, p, t, c in abandoned:
                conn.execute(
                    _s.update()
                    .where(_s.c.scope == s, _s.c.period == p)
                    .values(tokens=_s.c.tokens + t, cost=_s.c.cost + c, updated_at=now)
                )
                old = spent[(s, p)]
                spent[(s, p)] = (old[0] + int(t), old[1] + float(c))
            held = {
                (s, p): (int(t or 0), float(c or 0.0))
                for s, p, t, c in conn.execute(
                    sa.select(
                        _h.c.scope, _h.c.period, sa.func.sum(_h.c.tokens), sa.func.sum(_h.c.cost)
                    )
                    .where(held_in)
                    .group_by(_h.c.scope, _h.c.period)
                )
            }
            for charge, key in zip(charges, keys, strict=True):
                refusal = refusal_if_over(charge, spent[key], held.get(key, (0, 0.0)), tokens, cost)
                if refusal is not None:
                    return refusal
            conn.execute(
                _h.insert(),
                [
                    {
                        "hold": hold,
                        "scope": s,
                        "period": p,
                        "owner": owner,
                        "tokens": tokens,
                        "cost": cost,
                        "expires_at": expires_at,
                    }
                    for s, p in keys
                ],
            )
            return None

        return await self.database.transaction(work)

    async def settle(self, hold: str, tokens: int, cost: float, *, now: float) -> None:
        def work(conn: sa.Connection) -> None:
            # Only the budgets this hold is still on: one charged as abandoned is not charged twice.
            budgets = sorted(
                (s, p)
                for s, p in conn.execute(
                    _h.delete().where(_h.c.hold == hold).returning(_h.c.scope, _h.c.period)
                )
            )
            for s, p in budgets:
                conn.execute(
                    _s.update()
                    .where(_s.c.scope == s, _s.c.period == p)
                    .values(tokens=_s.c.tokens + tokens, cost=_s.c.cost + cost, updated_at=now)
                )

        await self.database.transaction(work)

    async def renew(self, owner: str, expires_at: float) -> None:
        await self.database.transaction(
            lambda conn: conn.execute(
                _h.update().where(_h.c.owner == owner).values(expires_at=expires_at)
            ),
            leases=True,
        )

    async def spent(self, scope: str, period: str) -> tuple[int, float]:
        rows = await self.database.read(
            sa.select(_s.c.tokens, _s.c.cost).where(_s.c.scope == scope, _s.c.period == period)
        )
        return (int(rows[0][0]), float(rows[0][1])) if rows else (0, 0.0)
