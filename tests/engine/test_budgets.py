"""Token and cost budgets (issue 16 item 2): a call that would go over a budget does not
start, the execution pauses (or fails) before it, and resumes once the budget is raised.
Usage comes from the provider's answers: the `openai` provider against the local
chat-completions server, which reports the usage each test scripts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.budgets import BudgetConfig, Budgets, BudgetSpec, Claim, Price
from agentrun.engine.errors import InvalidWorkflow
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.budgets import Charge
from agentrun.storage.budgets_sql import SqlBudgetLedger
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState
from agentrun.storage.sql import SqlStore
from tests.engine.conftest import eventually
from tests.integrations.chatserver import ChatServer
from tests.storage import conftest as storage_fixtures
from tests.storage.conftest import PgServer
from tests.storage.templates import migrated_sqlite

# Throwaway databases on the shared PostgreSQL server (a session fixture).
pg_server = storage_fixtures.pg_server

pytestmark = pytest.mark.timeout(120)

# Each answer reports 5 prompt and 10 completion tokens; each call may write 10: after the
# first call (10 reserved) a call reserves 10 + the 5 prompt tokens its node used last time.
ANSWER = {
    "content": "ok",
    "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15},
}


def chain(name: str, calls: int, budget: str) -> str:
    nodes = "".join(
        f"  - {{id: c{i}, {'needs: [c' + str(i - 1) + '], ' if i else ''}"
        f"agent: {{model: openai/gpt-test, prompt: 'step {i}', max_tokens: 10, stream: false}}}}\n"
        for i in range(calls)
    )
    return f"name: {name}\n{budget}nodes:\n{nodes}"


async def make(chat: ChatServer, *, store: Any = None, **config: Any) -> Engine:
    integrations = {"openai": {"base_url": chat.base_url, "api_key": "test"}}
    tools = default_tools(integrations)
    engine = Engine(
        store or MemoryStore(),
        tools=tools,
        agents=default_agents(integrations, tools=tools),
        config=EngineConfig.from_mapping(config, seed=3),
    )
    await engine.start()
    return engine


async def test_pauses_before_the_call_that_would_cross_and_resumes_when_raised() -> None:
    async with ChatServer([ANSWER] * 5) as chat:
        engine = await make(chat)
        await engine.create_workflow(load_workflow(chain("spend", 5, "budget: {max_tokens: 50}\n")))
        ex = await engine.start_execution("spend", {})
        await eventually(lambda: _state(engine, ex.id, ExecutionState.PAUSED))
        # Spent 15 + 15 + 15; the fourth call would reserve 15 more: 60 > 50, it never started.
        assert len(chat.bodies) == 3
        nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
        assert [nodes[f"c{i}"].state for i in range(3)] == [NodeState.SUCCEEDED] * 3
        assert nodes["c3"].attempt == 0 and nodes["c3"].state is not NodeState.RUNNING
        record = await engine.get_execution(ex.id)
        assert record.usage["total_tokens"] == 45
        paused = [e for e in await engine.list_events(ex.id) if e.type == "execution.paused"]
        assert paused[-1].data["reason"] == "budget_exhausted"
        assert paused[-1].data["budget"]["spent_tokens"] == 45
        assert paused[-1].data["budget"]["asked_tokens"] == 15
        assert paused[-1].data["budget"]["scope"] == "workflow:default/spend"
        # An operator raises the budget (a new version of the workflow): the execution resumes.
        await engine.create_workflow(
            load_workflow(chain("spend", 5, "budget: {max_tokens: 100}\n"))
        )
        final = await engine.wait(ex.id, timeout=30)
        assert final.state is ExecutionState.SUCCEEDED
        assert len(chat.bodies) == 5 and final.usage["total_tokens"] == 75
        await engine.stop(grace=0)


async def test_on_exhausted_fail_fails_the_execution() -> None:
    async with ChatServer([ANSWER] * 3) as chat:
        engine = await make(chat)
        await engine.create_workflow(
            load_workflow(chain("strict", 3, "budget: {max_tokens: 20, on_exhausted: fail}\n"))
        )
        ex = await engine.start_execution("strict", {})
        final = await engine.wait(ex.id, timeout=30)
        assert final.state is ExecutionState.FAILED
        assert final.error["type"] == "budget_exhausted"
        assert final.error["details"]["max_tokens"] == 20
        assert len(chat.bodies) == 1
        await engine.stop(grace=0)


async def test_a_tenant_budget_and_a_cost_from_the_price_table() -> None:
    """The tenant's budget (server config) counts every workflow's calls; cost comes from the
    price table: 5 input and 10 output tokens at 1 and 2 per million."""
    async with ChatServer([ANSWER] * 6) as chat:
        engine = await make(
            chat,
            budgets={"tenants": {"acme": {"max_cost": 0.00008, "window": "day"}}},
            prices={"openai": {"gpt-test": {"input": 1.0, "output": 2.0}}},
        )
        await engine.create_workflow(load_workflow(chain("a", 2, "")), tenant="acme")
        await engine.create_workflow(load_workflow(chain("b", 2, "")), tenant="acme")
        first = await engine.start_execution("a", {}, tenant="acme")
        assert (await engine.wait(first.id, timeout=30)).state is ExecutionState.SUCCEEDED
        assert (await engine.get_execution(first.id, tenant="acme")).usage["cost"] == pytest.approx(
            0.00005
        )
        second = await engine.start_execution("b", {}, tenant="acme")
        await eventually(lambda: _state(engine, second.id, ExecutionState.PAUSED, tenant="acme"))
        # 0.00005 spent; b's first call reserves 10 output tokens (0.00002): it fits, and spends
        # 0.000025; its second reserves 5 input and 10 output tokens: 0.0001 > 0.00008.
        assert len(chat.bodies) == 3
        await engine.stop(grace=0)


async def test_three_replicas_share_a_tenant_budget(pg_server: PgServer) -> None:
    """30 one-call executions over three replicas on one PostgreSQL database, a tenant budget
    of 150 tokens, each call reserving and using 10: exactly 15 calls run, whichever replica
    runs them; the others' executions wait PAUSED."""
    url = pg_server.create_database(migrated=True)
    answer = {
        "content": "ok",
        "usage": {"prompt_tokens": 0, "completion_tokens": 10, "total_tokens": 10},
    }
    async with ChatServer([answer] * 40) as chat:
        engines = []
        for name in "abc":
            store = SqlStore(url)
            await store.open()
            engines.append(
                await make(
                    chat,
                    store=store,
                    replica_id=name,
                    budgets={"tenants": {"acme": {"max_tokens": 150}}},
                )
            )
        await engines[0].create_workflow(load_workflow(chain("one", 1, "")), tenant="acme")
        ids = [
            (e, (await e.start_execution("one", {}, tenant="acme")).id)
            for _ in range(10)
            for e in engines
        ]

        async def settled() -> bool:
            states = [(await e.get_execution(i, tenant="acme")).state for e, i in ids]
            return states.count(ExecutionState.SUCCEEDED) + states.count(
                ExecutionState.PAUSED
            ) == len(ids)

        await eventually(settled, timeout=60)
        states = [(await e.get_execution(i, tenant="acme")).state for e, i in ids]
        assert states.count(ExecutionState.SUCCEEDED) == 15 and len(chat.bodies) == 15
        spent = sum(
            [
                ((await e.get_execution(i, tenant="acme")).usage or {}).get("total_tokens", 0)
                for e, i in ids
            ]
        )
        assert spent == 150
        assert await engines[0].budgets.ledger.spent("tenant:acme", _today(engines[0])) == (
            150,
            0.0,
        )
        for engine in engines:
            await engine.stop(grace=0)
            await engine.store.close()


def _today(engine: Engine) -> str:
    import datetime

    return "day:" + datetime.datetime.fromtimestamp(engine.clock(), datetime.UTC).date().isoformat()


def test_budget_values_are_checked_with_their_paths() -> None:
    cases = {
        "budget: {max_tokens: -1}\n": "budget.max_tokens",
        "budget: {max_cost: -0.5}\n": "budget.max_cost",
        "budget: {window: execution}\n": "budget",
    }
    for budget, path in cases.items():
        with pytest.raises(InvalidWorkflow) as caught:
            _compile(chain("bad", 1, budget))
        assert any(d.path == path for d in caught.value.diagnostics), caught.value.diagnostics
    with pytest.raises(InvalidWorkflow) as caught:
        load_workflow(chain("bad", 1, "budget: {max_tokens: 5, window: week}\n"))
    assert "budget.window" in str(caught.value) and "day" in str(caught.value)
    plan = _compile(
        chain("ok", 1, "budget: {max_tokens: 5, max_cost: 1.5, window: day, on_exhausted: fail}\n")
    )
    assert plan.budget == BudgetSpec(5, 1.5, "day", "fail")


def test_budget_config_is_checked() -> None:
    config = BudgetConfig.from_mapping(
        {"tenants": {"acme": {"max_tokens": 1000}}, "reserve_tokens": 256},
        {"openai": {"gpt-test": {"input": 1, "output": 2}}},
    )
    assert config.tenants["acme"] == BudgetSpec(1000, 0.0, "day", "pause")
    assert config.price("openai", "gpt-test") == Price(1.0, 2.0, 1.0)
    for budgets, prices, message in [
        ({"tenants": {"acme": {"max_tokens": -3}}}, None, "budgets.tenants.acme.max_tokens"),
        (
            {"tenants": {"acme": {"max_tokens": 3, "window": "week"}}},
            None,
            "budgets.tenants.acme.window",
        ),
        ({"tenants": {"acme": {}}}, None, "sets neither"),
        ({"oops": 1}, None, "budgets: unknown settings oops"),
        (None, {"openai": {"m": {"input": -1}}}, "prices.openai.m.input"),
        (None, {"openai": {"m": {"prompt": 1}}}, "prices.openai.m"),
    ]:
        with pytest.raises(ValueError, match=message):
            BudgetConfig.from_mapping(budgets, prices)


def _compile(text: str) -> Any:
    from agentrun.engine import compile_workflow

    agents = default_agents({"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "x"}})
    return compile_workflow(load_workflow(text), tools=default_tools(None), agents=agents)


async def _state(
    engine: Engine, execution_id: str, state: ExecutionState, tenant: str = "default"
) -> bool:
    return (await engine.get_execution(execution_id, tenant=tenant)).state is state


class _Engine:
    """What `Budgets` asks of its engine: a clock, the workflow's budget, pausing."""

    clock = staticmethod(time.time)

    async def workflow_budget(self, tenant: str, workflow: str, execution_id: str) -> None:
        return None

    def budget_pause(self, execution_id: str, info: Any) -> bool:
        return True

    def budget_resume(self, execution_id: str) -> None:
        pass

    def budget_fail(self, execution_id: str, error: Any) -> None:
        pass


class _HeldLedger(SqlBudgetLedger):
    """A SQL ledger whose reservations after the first `free` wait for `go`: a refused call
    asked again (as a loaded database, or many of them one after another, would take)."""

    def __init__(self, database: Any, free: int) -> None:
        super().__init__(database)
        self.free = free
        self.go = asyncio.Event()
        self.held = asyncio.Event()

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        if self.free <= 0:
            self.held.set()
            await self.go.wait()
        self.free -= 1
        return await super().reserve(*args, **kwargs)


async def _expires(store: SqlStore, hold: str) -> float:
    from agentrun.storage import schema as db

    h = db.budget_holds
    rows = await store.database.read(sa.select(h.c.expires_at).where(h.c.hold == hold))
    assert rows, f"hold {hold} is gone"
    return float(rows[0][0])


async def test_holds_are_renewed_while_refused_calls_are_asked_again(tmp_path: Path) -> None:
    """A running call's reservation is renewed while the same process asks its refused calls
    again, however long that takes: the renewal ran in the loop that re-asked them, after
    them, so a process re-asking many refused calls (thousands paused on an exhausted budget)
    for longer than a lease let its running calls' holds lapse, and the next reservation
    anywhere charged them in full as abandoned (the process was alive, the call running).
    Here one re-ask is held past the lease: the running call's hold must still be renewed,
    and a reservation made after its first lease ran out must not charge it."""
    store = SqlStore(migrated_sqlite(tmp_path / "store.db"))
    await store.open()
    ledger = _HeldLedger(store.database, free=2)
    engine = _Engine()
    config = BudgetConfig(tenants={"acme": BudgetSpec(max_tokens=100, window="day")})
    budgets = Budgets(config, ledger, engine=engine, owner="a", lease_seconds=3.0)
    started: list[str] = []
    try:
        running = Claim(("e1", "n"), "acme", "w", "openai", "m", "n", 60)
        budgets.admit(running, lambda: started.append("e1"))
        async with asyncio.timeout(30):
            while not started:
                await asyncio.sleep(0.01)
        first_expiry = await _expires(store, running.hold)
        # 60 held + 60 asked > 100: refused, and asked again every second (held there).
        refused = Claim(("e2", "n"), "acme", "w", "openai", "m", "n", 60)
        budgets.admit(refused, lambda: started.append("e2"))
        async with asyncio.timeout(30):
            await ledger.held.wait()
        try:
            async with asyncio.timeout(30):
                while await _expires(store, running.hold) <= first_expiry:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail("the running call's hold was not renewed while a refused call was asked")
        # Another process reserves just after the first lease would have ended: nothing
        # abandoned to charge.
        period = _today_of(engine.clock())
        refusal = await SqlBudgetLedger(store.database).reserve(
            "b/1",
            "b",
            [Charge("tenant:acme", period, 100)],
            1,
            0.0,
            now=first_expiry + 0.1,
            expires_at=first_expiry + 3.0,
        )
        assert refusal is None
        assert await ledger.spent("tenant:acme", period) == (0, 0.0)
    finally:
        ledger.go.set()
        await budgets.close()
        await store.close()


def _today_of(now: float) -> str:
    import datetime

    return "day:" + datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()
