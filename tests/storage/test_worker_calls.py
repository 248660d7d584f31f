"""The worker call repository's contract, on every backend: a call leaves READY once, its
outcome is written once and only under a live lease (the fence), lost workers lose their
calls, and calls nobody waits for are withdrawn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentrun.storage.worker_calls import (
    CallRecord,
    CallState,
    Claim,
    MemoryWorkerCalls,
    ToolDeclaration,
    ToolTaken,
    WorkerCallStore,
    WorkerRecord,
    worker_calls_for,
)
from tests.storage.templates import migrated_sqlite

LOST = {"type": "worker_lost", "message": "gone", "details": {}}
NOW = 1_000_000.0


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkerCallStore]:
    if request.param == "memory":
        yield MemoryWorkerCalls()
        return
    from agentrun.storage.sql import SqlStore

    if request.param == "sqlite":
        url = migrated_sqlite(tmp_path / "store.db")
    else:  # workers ids are per test
        url = request.getfixturevalue("pg_server").create_database(migrated=True)
    store = SqlStore(url)
    await store.open()
    yield worker_calls_for(store)
    await store.close()
    if request.param == "postgresql":
        request.getfixturevalue("pg_server").release(url)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def call(tenant: str, tool: str, n: int = 0, **kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "tenant": tenant,
        "tool": tool,
        "execution_id": f"{tenant}-e1",
        "node_id": f"n{n}",
        "attempt": 1,
        "idempotency_key": f"e1/n{n}/1",
        "args": {"n": n},
        "caller": "replica-a",
        "caller_expires": NOW + 60,
        "created_at": NOW + n / 1000,
    }
    base.update(kw)
    return CallRecord(**base)


def claim(
    tenant: str, worker: str, tools: dict[str, int], total: int = 100, **labels: str
) -> Claim:
    return Claim(worker_id=worker, tenant=tenant, labels=labels, free=tools, total=total)


async def test_a_claim_takes_the_oldest_ready_calls_up_to_the_free_slots(
    repo: WorkerCallStore, tenant: str
) -> None:
    calls = [call(tenant, "x.a", n) for n in range(5)]
    for c in reversed(calls):
        await repo.enqueue(c)
    await repo.enqueue(call(tenant, "x.b", 9))
    await repo.enqueue(call("someone-else", "x.a", 10))
    got = await repo.claim(claim(tenant, "w1", {"x.a": 3}), now=NOW, lease_until=NOW + 5)
    assert [c.id for c in got] == [c.id for c in calls[:3]]
    assert all(
        c.state is CallState.LEASED and c.worker_id == "w1" and c.lease_expires == NOW + 5
        for c in got
    )
    more = await repo.claim(claim(tenant, "w2", {"x.a": 10}, total=1), now=NOW, lease_until=NOW + 5)
    assert [c.id for c in more] == [calls[3].id]
    rest = await repo.claim(claim(tenant, "w2", {"x.a": 10}), now=NOW, lease_until=NOW + 5)
    assert [c.id for c in rest] == [calls[4].id]
    assert await repo.claim(claim(tenant, "w3", {"x.a": 10}), now=NOW, lease_until=NOW + 5) == []
    assert await repo.active_calls(["w1", "w2", "w3"]) == {"w1": 3, "w2": 2, "w3": 0}


async def test_enqueueing_a_known_call_leaves_it_as_it_is(
    repo: WorkerCallStore, tenant: str
) -> None:
    first = call(tenant, "x.a")
    await repo.enqueue(first)
    await repo.claim(claim(tenant, "w1", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    await repo.enqueue(call(tenant, "x.b", id=first.id))
    (stored,) = await repo.get_calls([first.id])
    assert stored.tool == "x.a" and stored.state is CallState.LEASED and stored.worker_id == "w1"


async def test_labels_route_a_call_to_workers_that_offer_them(
    repo: WorkerCallStore, tenant: str
) -> None:
    eu = call(tenant, "x.a", 1, labels={"region": "eu"})
    anywhere = call(tenant, "x.a", 2)
    await repo.enqueue(eu)
    await repo.enqueue(anywhere)
    us = await repo.claim(
        claim(tenant, "us", {"x.a": 5}, region="us"), now=NOW, lease_until=NOW + 5
    )
    assert [c.id for c in us] == [anywhere.id]
    got = await repo.claim(
        claim(tenant, "eu", {"x.a": 5}, region="eu", gpu="yes"), now=NOW, lease_until=NOW + 5
    )
    assert [c.id for c in got] == [eu.id] and got[0].labels == {"region": "eu"}


async def test_the_outcome_is_written_once_and_only_under_a_live_lease(
    repo: WorkerCallStore, tenant: str
) -> None:
    c = call(tenant, "x.a")
    await repo.enqueue(c)
    assert not await repo.complete(c.id, "w1", now=NOW, result=1)  # not leased yet
    await repo.claim(claim(tenant, "w1", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    assert not await repo.complete(c.id, "w2", now=NOW + 1, result=2)  # another worker
    assert not await repo.complete(c.id, "w1", now=NOW + 6, result=3)  # the lease expired
    assert await repo.complete(c.id, "w1", now=NOW + 4, result={"ok": True})
    assert not await repo.complete(c.id, "w1", now=NOW + 4, result=4)  # once
    (stored,) = await repo.get_calls([c.id])
    assert (
        stored.state is CallState.SUCCEEDED
        and stored.result == {"ok": True}
        and stored.error is None
    )


async def test_an_error_answer_fails_the_call(repo: WorkerCallStore, tenant: str) -> None:
    c = call(tenant, "x.a")
    await repo.enqueue(c)
    await repo.claim(claim(tenant, "w1", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    error = {"type": "payments.declined", "message": "no", "details": {}, "retryable": False}
    assert await repo.complete(c.id, "w1", now=NOW + 1, error=error)
    (stored,) = await repo.get_calls([c.id])
    assert stored.state is CallState.FAILED and stored.error == error


async def test_a_lost_worker_loses_its_calls_and_its_late_answer_is_refused(
    repo: WorkerCallStore, tenant: str
) -> None:
    held = [call(tenant, "x.a", n) for n in range(3)]
    for c in held:
        await repo.enqueue(c)
    await repo.claim(claim(tenant, "w1", {"x.a": 2}), now=NOW, lease_until=NOW + 5)
    lost = await repo.release("w1", now=NOW + 1, error=LOST)
    assert sorted(c.id for c in lost) == sorted(c.id for c in held[:2])
    assert all(c.state is CallState.FAILED and c.error == LOST for c in lost)
    assert not await repo.complete(held[0].id, "w1", now=NOW + 2, result=1)
    (ready,) = await repo.waiting(f"{tenant}-e1")
    assert ready.id == held[2].id


async def test_renewals_extend_live_leases_and_expiry_ends_the_others(
    repo: WorkerCallStore, tenant: str
) -> None:
    a, b = call(tenant, "x.a", 1), call(tenant, "x.a", 2)
    await repo.enqueue(a)
    await repo.enqueue(b)
    await repo.claim(claim(tenant, "w1", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    await repo.claim(claim(tenant, "w2", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    assert await repo.renew("w1", now=NOW + 4, lease_until=NOW + 9) == {a.id}
    assert await repo.renew("w2", now=NOW + 6, lease_until=NOW + 11) == set()  # too late
    assert await repo.expire([a.id, b.id], now=NOW + 7, error=LOST) == [b.id]
    assert await repo.complete(a.id, "w1", now=NOW + 8, result="a")
    assert not await repo.complete(b.id, "w2", now=NOW + 8, result="b")


async def test_cancelled_calls_are_not_claimed_and_end_once(
    repo: WorkerCallStore, tenant: str
) -> None:
    leased, ready = call(tenant, "x.a", 1), call(tenant, "x.a", 2)
    await repo.enqueue(leased)
    await repo.claim(claim(tenant, "w1", {"x.a": 1}), now=NOW, lease_until=NOW + 5)
    await repo.enqueue(ready)
    gone = {"type": "cancelled", "message": "timeout", "details": {}}
    first = await repo.cancel(ready.id, now=NOW, error=gone)
    assert first is not None and first.state is CallState.CANCELLED and first.worker_id is None
    second = await repo.cancel(ready.id, now=NOW, error=gone)
    assert second is None
    withdrawn = await repo.cancel(leased.id, now=NOW, error=gone)
    assert withdrawn is not None and withdrawn.worker_id == "w1"
    assert not await repo.complete(leased.id, "w1", now=NOW + 1, result=1)
    assert await repo.claim(claim(tenant, "w2", {"x.a": 5}), now=NOW, lease_until=NOW + 5) == []


async def test_calls_of_a_vanished_caller_or_past_their_deadline_are_not_claimed(
    repo: WorkerCallStore, tenant: str
) -> None:
    orphan = call(tenant, "x.a", 1, caller="dead", caller_expires=NOW - 1)
    late = call(tenant, "x.a", 2, deadline=NOW - 1)
    kept = call(tenant, "x.a", 3, caller="alive", caller_expires=NOW - 1)
    for c in (orphan, late, kept):
        await repo.enqueue(c)
    await repo.keep_callers("alive", until=NOW + 30)
    got = await repo.claim(claim(tenant, "w1", {"x.a": 5}), now=NOW, lease_until=NOW + 5)
    assert [c.id for c in got] == [kept.id]
    swept = await repo.sweep(now=NOW, keep_seconds=60, worker_seen_after=0)
    assert orphan.id in {c.id for c in swept} and kept.id not in {c.id for c in swept}
    (stored,) = await repo.get_calls([orphan.id])
    assert stored.state is CallState.CANCELLED
    await repo.sweep(now=NOW + 120, keep_seconds=60, worker_seen_after=0)
    assert await repo.get_calls([orphan.id]) == []  # ended long ago: deleted


async def test_concurrent_claims_never_lease_a_call_twice(
    repo: WorkerCallStore, tenant: str
) -> None:
    calls = [call(tenant, "x.a", n) for n in range(40)]
    for c in calls:
        await repo.enqueue(c)
    leased: list[str] = []
    for _ in range(40):  # rounds: a claimer may find every row locked by the others
        batches = await asyncio.gather(
            *(
                repo.claim(claim(tenant, f"w{i}", {"x.a": 3}), now=NOW, lease_until=NOW + 5)
                for i in range(20)
            )
        )
        assert all(len(batch) <= 3 for batch in batches)
        leased += [c.id for batch in batches for c in batch]
        if len(leased) >= 40:
            break
    assert len(leased) == len(set(leased)) == 40


async def test_a_tool_name_belongs_to_the_tenant_that_declared_it(
    repo: WorkerCallStore, tenant: str
) -> None:
    name = f"x.{uuid.uuid4().hex[:6]}"
    await repo.declare_tools(tenant, [ToolDeclaration(name, tenant, {"description": "one"}, NOW)])
    await repo.declare_tools(
        tenant, [ToolDeclaration(name, tenant, {"description": "two"}, NOW + 1)]
    )
    with pytest.raises(ToolTaken):
        await repo.declare_tools(
            "other", [ToolDeclaration(name, "other", {"description": "mine"}, NOW + 2)]
        )
    (stored,) = [t for t in await repo.list_tools() if t.name == name]
    assert stored.tenant == tenant and stored.definition == {"description": "two"}


async def test_workers_are_listed_with_their_load_until_they_fall_silent(
    repo: WorkerCallStore, tenant: str
) -> None:
    for n in range(3):
        await repo.add_worker(
            WorkerRecord(
                f"{tenant}-w{n}",
                tenant,
                f"host-{n}",
                "r1",
                {"region": "eu"},
                "1.0",
                [{"name": "x.a"}],
                4,
                NOW,
                NOW,
            )
        )
    await repo.update_worker(f"{tenant}-w1", heartbeat_at=NOW + 10, state="DRAINING")
    page = await repo.list_workers(tenant, seen_after=NOW - 1, limit=2)
    assert [w.id for w in page] == [f"{tenant}-w0", f"{tenant}-w1"]
    assert (
        page[1].state == "DRAINING"
        and page[0].labels == {"region": "eu"}
        and page[0].tools == [{"name": "x.a"}]
    )
    rest = await repo.list_workers(tenant, seen_after=NOW - 1, limit=2, after_id=page[-1].id)
    assert [w.id for w in rest] == [f"{tenant}-w2"]
    await repo.remove_worker(f"{tenant}-w2")
    await repo.sweep(now=NOW + 20, keep_seconds=60, worker_seen_after=NOW + 5)
    assert [w.id for w in await repo.list_workers(tenant, seen_after=0, limit=10)] == [
        f"{tenant}-w1"
    ]


async def test_a_caller_polls_what_changed_for_its_own_calls(
    repo: WorkerCallStore, tenant: str
) -> None:
    done, lost, busy, quiet, other = (call(tenant, "x.a", n) for n in range(5))
    other.caller = "replica-b"
    for c in (done, lost, busy, quiet, other):
        await repo.enqueue(c)
    await repo.claim(claim(tenant, "w1", {"x.a": 5}), now=NOW, lease_until=NOW + 5)
    await repo.complete(done.id, "w1", now=NOW + 1, result=1)
    await repo.complete(other.id, "w1", now=NOW + 1, result=1)
    await repo.report_progress(busy.id, "w1", {"progress": 1, "total": 2, "message": None})
    await repo.renew("w1", now=NOW + 2, lease_until=NOW + 20)
    changed = {s.id: s for s in await repo.changes("replica-a", since=NOW + 0.5, now=NOW + 10)}
    assert set(changed) == {done.id, busy.id}
    assert changed[done.id].state is CallState.SUCCEEDED and changed[busy.id].progress == {
        "progress": 1,
        "total": 2,
        "message": None,
    }
    later = {s.id for s in await repo.changes("replica-a", since=NOW + 2, now=NOW + 25)}
    assert later == {busy.id, lost.id, quiet.id}  # the leases expired; done ended before `since`
