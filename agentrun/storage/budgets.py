"""The budget ledger: what each budget has spent in a period, and what running calls hold.

A call reserves its estimate against every budget it counts against (`reserve`) in one
transaction that sees every other reservation, so replicas sharing a database share the
budget; the call's actual usage replaces the estimate when it ends (`settle`). A
reservation is renewed by the process that made it; one whose process stopped renewing is
charged in full (the call may have run) the next time its budget is reserved against.

SQL (SQLite and PostgreSQL) keeps the ledger in `budget_spend` and `budget_holds`; on
PostgreSQL the reserving transaction locks the budgets' rows, on SQLite the single writer
serialises it, so two processes on one file share budgets too. The memory store's ledger is
a dict. The limits are the caller's, given with each reservation: a budget raised or
lowered applies to the next call.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import Store
from agentrun.storage.sqldb import SqlDatabase

__all__ = [
    "BudgetLedger",
    "Charge",
    "MemoryBudgetLedger",
    "Refusal",
    "SqlBudgetLedger",
    "ledger_for",
]


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget a call counts against: its scope and period, and its limits (0: none)."""

    scope: str
    period: str
    max_tokens: int = 0
    max_cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first budget a reservation did not fit: what it had spent and held, and what
    the call asked for."""

    charge: Charge
    spent_tokens: int
    spent_cost: float
    held_tokens: int
    held_cost: float
    asked_tokens: int
    asked_cost: float

    def as_dict(self) -> dict[str, Any]:
        c = self.charge
        return {
            "scope": c.scope,
            "period": c.period,
            "max_tokens": c.max_tokens,
            "max_cost": c.max_cost,
            "spent_tokens": self.spent_tokens,
            "spent_cost": round(self.spent_cost, 10),
            "reserved_tokens": self.held_tokens,
            "reserved_cost": round(self.held_cost, 10),
            "asked_tokens": self.asked_tokens,
            "asked_cost": round(self.asked_cost, 10),
        }


def _refusal(
    charge: Charge, spent: tuple[int, float], held: tuple[int, float], tokens: int, cost: float
) -> Refusal | None:
    over_tokens = charge.max_tokens > 0 and spent[0] + held[0] + tokens > charge.max_tokens
    over_cost = charge.max_cost > 0 and spent[1] + held[1] + cost > charge.max_cost + 1e-12
    if over_tokens or over_cost:
        return Refusal(charge, spent[0], spent[1], held[0], held[1], tokens, cost)
    return None


class BudgetLedger(abc.ABC):
    @abc.abstractmethod
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
        """Holds `tokens` and `cost` against every charge, or against none and says which
        one it did not fit (spent + held + asked over a limit)."""

    @abc.abstractmethod
    async def settle(self, hold: str, tokens: int, cost: float, *, now: float) -> None:
        """Ends a hold: its budgets are charged the call's actual usage instead."""

    @abc.abstractmethod
    async def renew(self, owner: str, expires_at: float) -> None:
        """Keeps the holds of a live process from being charged as abandoned."""

    @abc.abstractmethod
    async def spent(self, scope: str, period: str) -> tuple[int, float]:
        """Tokens and cost settled against one budget in one period."""


class MemoryBudgetLedger(BudgetLedger):
    """One process's ledger (the memory store)."""

    def __init__(self) -> None:
        self._spent: dict[tuple[str, str], tuple[int, float]] = {}
        # hold -> (owner, expires_at, tokens, cost, budgets)
        self._holds: dict[str, tuple[str, float, int, float, list[tuple[str, str]]]] = {}

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
        for other, (_, expiry, t, c, budgets) in list(self._holds.items()):
            if expiry < now:
                del self._holds[other]
                for key in budgets:
                    self._add(key, t, c)
        for charge in charges:
            key = (charge.scope, charge.period)
            held_t = sum(h[2] for h in self._holds.values() if key in h[4])
            held_c = sum(h[3] for h in self._holds.values() if key in h[4])
            refusal = _refusal(
                charge, self._spent.get(key, (0, 0.0)), (held_t, held_c), tokens, cost
            )
            if refusal is not None:
                return refusal
        self._holds[hold] = (
            owner,
            expires_at,
            tokens,
            cost,
            [(c.scope, c.period) for c in charges],
        )
        return None

    async def settle(self, hold: str, tokens: int, cost: float, *, now: float) -> None:
        entry = self._holds.pop(hold, None)
        if entry is not None:
            for key in entry[4]:
                self._add(key, tokens, cost)

    async def renew(self, owner: str, expires_at: float) -> None:
        for hold, (who, _, t, c, budgets) in list(self._holds.items()):
            if who == owner:
                self._holds[hold] = (who, expires_at, t, c, budgets)

    async def spent(self, scope: str, period: str) -> tuple[int, float]:
        return self._spent.get((scope, period), (0, 0.0))

    def _add(self, key: tuple[str, str], tokens: int, cost: float) -> None:
        t, c = self._spent.get(key, (0, 0.0))
        self._spent[key] = (t + tokens, c + cost)


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
                refusal = _refusal(charge, spent[key], held.get(key, (0, 0.0)), tokens, cost)
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


def ledger_for(store: Store) -> BudgetLedger:
    """The SQL ledger on a SQL store's database, the memory ledger otherwise."""
    database = store.database
    return SqlBudgetLedger(database) if isinstance(database, SqlDatabase) else MemoryBudgetLedger()
