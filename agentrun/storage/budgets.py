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
lowered applies to the next call. The SQL ledger is in `budgets_sql`, imported only for a SQL
store: the memory store's processes never load SQLAlchemy.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentrun.storage.base import Store

__all__ = [
    "BudgetLedger",
    "Charge",
    "MemoryBudgetLedger",
    "Refusal",
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


def refusal_if_over(
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
            refusal = refusal_if_over(
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


def ledger_for(store: Store) -> BudgetLedger:
    """The SQL ledger on a SQL store's database, the memory ledger otherwise."""
    database = store.database
    if database is None:
        return MemoryBudgetLedger()
    from agentrun.storage.budgets_sql import SqlBudgetLedger

    return SqlBudgetLedger(database)
