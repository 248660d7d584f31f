"""Token and cost budgets, scheduled like slots.

A budget bounds what agent calls spend: `max_tokens` and `max_cost` (in the currency of the
server's price table), over a window: each execution on its own, or all of a scope's calls
in a UTC day. Budgets come from the server config for a tenant (`budgets: {tenants: {acme:
{...}}}`) and from a workflow's `budget:` (the newest version's, so an update raises or lowers
it for running executions too).

Before an agent call asks for a slot, the scheduler reserves its estimate against every
budget that covers it (`Budgets.admit`): tokens = the call's `max_tokens` (else
`reserve_tokens`) plus the prompt tokens of this node's previous call (else of the
workflow's previous call, else none); cost = those at the model's prices. A call that does not fit does not start: the execution is PAUSED
(`execution.paused` with `{reason: budget_exhausted, budget: {...}}`), or FAILED with
`budget_exhausted`, as the budget's `on_exhausted` says. The refused call is asked again
every `RECHECK_SECONDS`; once it fits (the budget was raised, the day rolled over, a call
settled below its estimate) the execution resumes and the call starts. When the call ends
(`release`) its actual usage, metered from its `agent.usage` events (input, output and
cached tokens; cost from the price table, else the provider's own figure), replaces the
reservation.

The bound: a call starts only while spent + reserved + its estimate <= the limit, so a
budget is exceeded only by calls that used more than they reserved: spent <= limit + the sum,
over the calls running when it ran out, of (actual - reserved). The ledger
(`agentrun.storage.budgets`) is in the database, so replicas share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import math
import secrets
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentrun.storage.budgets import BudgetLedger, Charge, Refusal

if TYPE_CHECKING:
    from agentrun.engine.plan import StepPlan
    from agentrun.v1 import workflow_pb2

log = logging.getLogger("agentrun.engine.budgets")

# How often a refused call is asked again.
RECHECK_SECONDS = 1.0
WINDOWS = ("execution", "day")
ON_EXHAUSTED = ("pause", "fail")


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    max_tokens: int = 0
    max_cost: float = 0.0
    window: str = "execution"
    on_exhausted: str = "pause"


def budget_from_spec(
    msg: workflow_pb2.Budget, error: Callable[[str, str], None]
) -> BudgetSpec | None:
    """A workflow's `budget:`; each bad value reported through `error(path, message)`."""
    from agentrun.v1 import workflow_pb2 as pb

    ok = True
    if msg.max_tokens < 0:
        error("budget.max_tokens", f"must not be negative, got {msg.max_tokens}")
        ok = False
    if not math.isfinite(msg.max_cost) or msg.max_cost < 0:
        error("budget.max_cost", f"must be a finite number not below 0, got {msg.max_cost}")
        ok = False
    if ok and not msg.max_tokens and not msg.max_cost:
        error("budget", "sets neither max_tokens nor max_cost")
        ok = False
    window = {pb.Budget.WINDOW_DAY: "day"}.get(msg.window, "execution")
    on_exhausted = {pb.Budget.ON_EXHAUSTED_FAIL: "fail"}.get(msg.on_exhausted, "pause")
    return (
        BudgetSpec(int(msg.max_tokens), float(msg.max_cost), window, on_exhausted) if ok else None
    )


def _spec_from_mapping(data: Any, where: str) -> BudgetSpec:
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}: expected a mapping with max_tokens, max_cost, window, on_exhausted"
        )
    unknown = set(data) - {"max_tokens", "max_cost", "window", "on_exhausted"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(map(str, unknown)))}")
    tokens, cost = data.get("max_tokens", 0), data.get("max_cost", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"{where}.max_tokens: expected a whole number not below 0, got {tokens!r}")
    if (
        isinstance(cost, bool)
        or not isinstance(cost, (int, float))
        or not math.isfinite(cost)
        or cost < 0
    ):
        raise ValueError(f"{where}.max_cost: expected a number not below 0, got {cost!r}")
    if not tokens and not cost:
        raise ValueError(f"{where}: sets neither max_tokens nor max_cost")
    window, on_exhausted = data.get("window", "day"), data.get("on_exhausted", "pause")
    if window not in WINDOWS:
        raise ValueError(f"{where}.window: expected one of {', '.join(WINDOWS)}, got {window!r}")
    if on_exhausted not in ON_EXHAUSTED:
        raise ValueError(
            f"{where}.on_exhausted: expected one of {', '.join(ON_EXHAUSTED)}, got {on_exhausted!r}"
        )
    return BudgetSpec(tokens, float(cost), window, on_exhausted)


@dataclass(frozen=True, slots=True)
class Price:
    """Per million tokens, in the price table's currency."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        fresh = max(0, input_tokens - cached_tokens)
        return (
            fresh * self.input + cached_tokens * self.cached_input + output_tokens * self.output
        ) / 1e6


@dataclass(slots=True)
class BudgetConfig:
    # Tenant name -> its budget (window `day` unless it says `execution`).
    tenants: dict[str, BudgetSpec] = field(default_factory=dict)
    # Provider name -> model -> price.
    prices: dict[str, dict[str, Price]] = field(default_factory=dict)
    # A call's output estimate when its node sets no `max_tokens`.
    reserve_tokens: int = 1024

    @classmethod
    def from_mapping(cls, budgets: Any, prices: Any) -> BudgetConfig:
        """From server config: `budgets: {tenants: {acme: {max_tokens, max_cost, window,
        on_exhausted}}, reserve_tokens: 1024}` and `prices: {openai: {gpt-4o-mini: {input:
        0.15, output: 0.6, cached_input: 0.075}}}` (per million tokens)."""
        budgets = dict(budgets or {})
        unknown = set(budgets) - {"tenants", "reserve_tokens"}
        if unknown:
            raise ValueError(f"budgets: unknown settings {', '.join(sorted(map(str, unknown)))}")
        tenants = budgets.get("tenants") or {}
        if not isinstance(tenants, Mapping):
            raise ValueError("budgets.tenants: expected a mapping of tenant names to budgets")
        reserve = budgets.get("reserve_tokens", 1024)
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 1:
            raise ValueError(
                f"budgets.reserve_tokens: expected a positive whole number, got {reserve!r}"
            )
        table: dict[str, dict[str, Price]] = {}
        if not isinstance(prices or {}, Mapping):
            raise ValueError("prices: expected a mapping of provider names to models")
        for provider, models in (prices or {}).items():
            if not isinstance(models, Mapping):
                raise ValueError(f"prices.{provider}: expected a mapping of model names to prices")
            for model, price in models.items():
                where = f"prices.{provider}.{model}"
                if not isinstance(price, Mapping) or set(price) - {
                    "input",
                    "output",
                    "cached_input",
                }:
                    raise ValueError(
                        f"{where}: expected {{input, output, cached_input}} per million tokens"
                    )
                values = {}
                for k, v in price.items():
                    if (
                        isinstance(v, bool)
                        or not isinstance(v, (int, float))
                        or not math.isfinite(v)
                        or v < 0
                    ):
                        raise ValueError(f"{where}.{k}: expected a number not below 0, got {v!r}")
                    values[k] = float(v)
                values.setdefault("cached_input", values.get("input", 0.0))
                table.setdefault(str(provider), {})[str(model)] = Price(**values)
        return cls(
            tenants={
                str(t): _spec_from_mapping(s, f"budgets.tenants.{t}") for t, s in tenants.items()
            },
            prices=table,
            reserve_tokens=reserve,
        )

    def price(self, provider: str, model: str) -> Price | None:
        return self.prices.get(provider, {}).get(model)


@dataclass(slots=True)
class Claim:
    """One agent call's way through its budgets: reserved, refused, or settled."""

    owner: Any  # the scheduler's owner: (execution id, node key)
    tenant: str
    workflow: str
    provider: str
    model: str
    node: str
    max_tokens: int
    then: Callable[[], None] | None = None
    hold: str = ""
    # What the call used so far (its agent.usage events).
    tokens: int = 0
    cost: float = 0.0
    prompt_tokens: int = 0
    refused: Refusal | None = None
    on_exhausted: str = "pause"
    # This claim paused its execution (so it may resume it).
    paused: bool = False
    dropped: bool = False


class Budgets:
    """The engine's budgets: claims for agent calls, the ledger, the rechecks."""

    def __init__(
        self,
        config: BudgetConfig,
        ledger: BudgetLedger,
        *,
        engine: Any,
        owner: str,
        lease_seconds: float,
    ) -> None:
        self.config = config
        self.ledger = ledger
        # Weak: the engine owns its budgets, and a strong reference back made every engine a
        # reference cycle, whose store and plans outlived it until a full collection.
        self._engine = weakref.proxy(engine)
        self._owner = f"{owner}.{secrets.token_hex(4)}"
        self._lease = lease_seconds
        self._holds = itertools.count(1)
        self._claims: dict[Any, Claim] = {}
        self._blocked: dict[Any, Claim] = {}
        # (tenant, workflow, node) -> prompt tokens of its last call: the next call's estimate.
        self._prompts: dict[tuple[str, str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------- which calls
    def covers(self, tenant: str, budget: BudgetSpec | None, step: StepPlan | None) -> bool:
        """Whether an agent call must reserve before it starts (a budget covers it)."""
        from agentrun.engine.plan import AgentStep  # plan.py imports BudgetSpec from here

        return (
            isinstance(step, AgentStep)
            and step.provider is not None
            and (budget is not None or tenant in self.config.tenants)
        )

    def claim(self, owner: Any, tenant: str, workflow: str, step: StepPlan) -> Claim:
        """Only for a step `covers` (an agent call)."""
        from agentrun.engine.plan import AgentStep

        assert isinstance(step, AgentStep) and step.provider is not None
        node = str(owner[1]).split("[", 1)[0]
        return Claim(
            owner,
            tenant,
            workflow,
            step.provider.name,
            step.model,
            node,
            step.max_tokens or self.config.reserve_tokens,
        )

    # ------------------------------------------------------------- the flow
    def admit(self, claim: Claim, then: Callable[[], None]) -> None:
        """Reserves `claim`'s estimate, then calls `then` (the call may ask for a slot); a
        refusal pauses (or fails) the execution and asks again every RECHECK_SECONDS."""
        claim.then = then
        self._claims[claim.owner] = claim
        asyncio.get_running_loop().create_task(self._admit(claim))

    async def _admit(self, claim: Claim) -> None:
        try:
            refusal = await self._reserve(claim)
        except Exception:
            log.warning("budget reservation failed; retrying", exc_info=True)
            refusal = None
            claim.hold = ""
            self._block(claim, None)
            return
        if claim.dropped:
            if not refusal and claim.hold:
                await self._settle(claim)
            return
        if refusal is not None:
            self._block(claim, refusal)
            return
        if claim.paused:
            claim.paused = False
            self._engine.budget_resume(claim.owner[0])
        assert claim.then is not None
        claim.then()

    async def _reserve(self, claim: Claim) -> Refusal | None:
        charges = await self._charges(claim)
        if not charges:
            return None
        prompts = self._prompts
        prompt = prompts.get(
            (claim.tenant, claim.workflow, claim.node),
            prompts.get((claim.tenant, claim.workflow, ""), 0),
        )
        tokens = claim.max_tokens + prompt
        price = self.config.price(claim.provider, claim.model)
        cost = price.cost(tokens - claim.max_tokens, claim.max_tokens) if price else 0.0
        claim.hold = f"{self._owner}/{next(self._holds)}"
        now = self._engine.clock()
        refusal = await self.ledger.reserve(
            claim.hold, self._owner, charges, tokens, cost, now=now, expires_at=now + self._lease
        )
        if refusal is not None:
            claim.hold = ""
        self._ensure_loop()
        return refusal

    async def _charges(self, claim: Claim) -> list[Charge]:
        execution_id = claim.owner[0]
        day = (
            "day:"
            + datetime.datetime.fromtimestamp(self._engine.clock(), datetime.UTC).date().isoformat()
        )
        charges = []
        specs = []
        tenant_spec = self.config.tenants.get(claim.tenant)
        if tenant_spec is not None:
            specs.append((f"tenant:{claim.tenant}", tenant_spec))
        workflow_spec = await self._engine.workflow_budget(
            claim.tenant, claim.workflow, execution_id
        )
        if workflow_spec is not None:
            specs.append((f"workflow:{claim.tenant}/{claim.workflow}", workflow_spec))
        for scope, spec in specs:
            period = day if spec.window == "day" else f"execution:{execution_id}"
            charges.append(Charge(scope, period, spec.max_tokens, spec.max_cost))
            if spec.on_exhausted == "fail":
                claim.on_exhausted = "fail"
        return charges

    def _block(self, claim: Claim, refusal: Refusal | None) -> None:
        """The call does not start: its execution pauses (or fails), and it is asked again."""
        claim.refused = refusal
        if refusal is not None:
            info = {"reason": "budget_exhausted", "budget": refusal.as_dict()}
            if claim.on_exhausted == "fail":
                self._claims.pop(claim.owner, None)
                self._engine.budget_fail(
                    claim.owner[0],
                    {
                        "type": "budget_exhausted",
                        "message": f"the call of {claim.node!r} does not fit budget {refusal.charge.scope} "
                        f"({refusal.charge.period})",
                        "details": info["budget"],
                    },
                )
                return
            if self._engine.budget_pause(claim.owner[0], info):
                claim.paused = True
        self._blocked[claim.owner] = claim
        self._ensure_loop()

    def release(self, owner: Any) -> None:
        """The call ended (or will not run): its actual usage replaces its reservation."""
        claim = self._claims.pop(owner, None)
        if claim is None:
            return
        claim.dropped = True
        self._blocked.pop(owner, None)
        if claim.hold:
            asyncio.get_running_loop().create_task(self._settle(claim))

    async def _settle(self, claim: Claim) -> None:
        hold, claim.hold = claim.hold, ""
        if claim.prompt_tokens:
            self._prompts[(claim.tenant, claim.workflow, claim.node)] = claim.prompt_tokens
            self._prompts[(claim.tenant, claim.workflow, "")] = claim.prompt_tokens
        try:
            await self.ledger.settle(hold, claim.tokens, claim.cost, now=self._engine.clock())
        except Exception:
            # The hold stays and is charged in full once it expires: never less than used.
            log.warning(
                "budget settlement of %s failed; its reservation will be charged",
                hold,
                exc_info=True,
            )

    def meter(self, owner: Any, usage: Mapping[str, Any]) -> dict[str, Any]:
        """An `agent.usage` report of a running call: counted on its claim, its `cost` from
        the price table when the table has the model (else the provider's own). Returns
        what to record."""
        data = dict(usage)
        prompt = _int(data.get("prompt_tokens", data.get("input_tokens")))
        completion = _int(data.get("completion_tokens", data.get("output_tokens")))
        cached = _int(data.get("cached_tokens"))
        claim = self._claims.get(owner)
        provider = claim.provider if claim is not None else str(data.get("provider") or "")
        model = str(data.get("model") or (claim.model if claim is not None else ""))
        price = self.config.price(provider, model)
        if price is not None:
            data["cost"] = round(price.cost(prompt, completion, cached), 10)
        if claim is not None:
            claim.tokens += _int(data.get("total_tokens")) or prompt + completion
            cost = data.get("cost")
            claim.cost += (
                float(cost)
                if isinstance(cost, (int, float)) and not isinstance(cost, bool)
                else 0.0
            )
            claim.prompt_tokens = max(claim.prompt_tokens, prompt)
        return data

    # ------------------------------------------------------------- upkeep
    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="agentrun-budgets")
        if self._renewer is None or self._renewer.done():
            self._renewer = loop.create_task(self._renew_loop(), name="agentrun-budget-holds")

    async def _loop(self) -> None:
        """Asks refused calls again, while any claim exists."""
        while self._claims:
            await asyncio.sleep(min(RECHECK_SECONDS, self._lease / 3))
            for claim in list(self._blocked.values()):
                if claim.dropped or self._blocked.get(claim.owner) is not claim:
                    continue
                del self._blocked[claim.owner]
                await self._admit(claim)

    async def _renew_loop(self) -> None:
        """Renews this process's reservations every lease/3 while any claim exists: a loop
        of its own, so that asking many refused calls again (one reservation each) never
        holds the renewal back until running calls' holds lapse and are charged in full."""
        while self._claims:
            await asyncio.sleep(self._lease / 3)
            with contextlib.suppress(Exception):
                await self.ledger.renew(self._owner, self._engine.clock() + self._lease)

    async def close(self) -> None:
        for task in (self._task, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
