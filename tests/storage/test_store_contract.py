"""The Store contract (agentrun/storage/base.py), checked on every backend.

Each test runs against memory, SQLite and PostgreSQL (see conftest.py); a behaviour that only
one backend shows is a bug in that backend or in the contract.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrun.storage.base import Store
from agentrun.storage.machines import EntryKind, HistoryRecord, InstanceRecord, InstanceState
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
    WorkflowRecord,
)

from .conftest import Backend
from .factories import execution_record

T0 = 1_790_000_000.123456
_ids = itertools.count(1)


def workflow(name: str = "wf", tenant: str = "acme", **spec: object) -> WorkflowRecord:
    return WorkflowRecord(
        tenant=tenant,
        name=name,
        version=99,  # ignored by create_workflow
        spec={"name": name, "nodes": [{"id": "a"}], **spec},
        created_at=T0,
        description=f"{name} workflow",
    )


def execution(
    id: str | None = None,
    *,
    tenant: str = "acme",
    workflow: str = "wf",
    state: ExecutionState = ExecutionState.RUNNING,
    request_id: str | None = None,
) -> ExecutionRecord:
    return execution_record(
        id or f"ex-{next(_ids):06d}",
        tenant=tenant,
        workflow=workflow,
        state=state,
        input={"q": "hello"},
        created_at=T0,
        request_id=request_id,
    )


def full_execution(id: str = "ex-full") -> ExecutionRecord:
    """Every field set to a non-default value, to catch a column that is dropped or mangled."""
    return execution_record(
        id,
        version=3,
        state=ExecutionState.WAITING,
        input={"nested": {"list": [1, 2.5, "three", None, True]}, "unicode": "héllo ✓"},
        created_at=T0,
        output=[1, {"a": None}],
        error={"type": "tool_error", "message": "boom", "node": "a", "details": {"code": 7}},
        vars={"counter": 3, "name": "x"},
        priority=-5,
        request_id="req-full",
        request_hash="sha256:abc",
        parent_id="ex-parent",
        parent_node="sub",
        started_at=T0 + 1.5,
        ended_at=T0 + 2.25,
        deadline=T0 + 3600.0,
        last_sequence=42,
        labels={"rerun_of": "ex-0"},
    )


def node(execution_id: str, node_id: str, state: NodeState = NodeState.RUNNING, **kw) -> NodeRecord:
    return NodeRecord(execution_id=execution_id, node_id=node_id, state=state, **kw)


def ev(execution_id: str, sequence: int, type: str = "node.running", **kw) -> EventRecord:
    return EventRecord(
        execution_id=execution_id, sequence=sequence, type=type, time=T0 + sequence, **kw
    )


def signal(execution_id: str, signal_id: str, name: str = "approve", data=None) -> SignalRecord:
    return SignalRecord(
        execution_id=execution_id,
        name=name,
        data=data if data is not None else {"by": signal_id},
        signal_id=signal_id,
        created_at=T0,
    )


async def started(store: Store, record: ExecutionRecord | None = None) -> ExecutionRecord:
    record = record or execution()
    stored, created = await store.create_execution(record)
    assert created
    return stored


# Workflows --------------------------------------------------------------------------------


async def test_create_workflow_assigns_increasing_versions(store: Store) -> None:
    first = await store.create_workflow(workflow(step=1))
    second = await store.create_workflow(workflow(step=2))
    other = await store.create_workflow(workflow("other"))
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert second.spec["step"] == 2 and second.description == "wf workflow"


async def test_get_workflow_latest_specific_and_missing(store: Store) -> None:
    await store.create_workflow(workflow(step=1))
    await store.create_workflow(workflow(step=2))
    latest = await store.get_workflow("acme", "wf")
    assert latest is not None and latest.version == 2 and latest.spec["step"] == 2
    v1 = await store.get_workflow("acme", "wf", 1)
    assert v1 == WorkflowRecord("acme", "wf", 1, v1.spec, T0, "wf workflow")
    assert v1.spec == {"name": "wf", "nodes": [{"id": "a"}], "step": 1}
    assert await store.get_workflow("acme", "wf", 3) is None
    assert await store.get_workflow("acme", "nope") is None
    assert await store.get_workflow("other-tenant", "wf") is None


async def test_workflow_version_is_the_number_get_workflow_would_return(store: Store) -> None:
    """What a start asks when its cached workflow expired (engine/workflows.py)."""
    await store.create_workflow(workflow(step=1))
    await store.create_workflow(workflow(step=2))
    assert await store.workflow_version("acme", "wf") == 2
    assert await store.workflow_version("acme", "wf", 1) == 1
    assert await store.workflow_version("acme", "wf", 3) is None
    assert await store.workflow_version("acme", "nope") is None
    assert await store.workflow_version("other-tenant", "wf") is None
    await store.delete_workflow("acme", "wf")
    assert await store.workflow_version("acme", "wf") is None
    assert await store.workflow_version("acme", "wf", 1) is None
    await store.create_workflow(workflow(step=3))
    assert await store.workflow_version("acme", "wf") == 3
    assert await store.workflow_version("acme", "wf", 2) is None


async def test_workflow_versions_are_per_tenant(store: Store) -> None:
    await store.create_workflow(workflow(tenant="a"))
    await store.create_workflow(workflow(tenant="a"))
    b = await store.create_workflow(workflow(tenant="b"))
    assert b.version == 1
    assert (await store.get_workflow("b", "wf")).version == 1


async def test_list_workflows_latest_by_name_with_paging(store: Store) -> None:
    for name in ["delta", "alpha", "charlie", "bravo", "echo"]:
        await store.create_workflow(workflow(name))
    await store.create_workflow(workflow("bravo", step=2))
    await store.create_workflow(workflow("zulu", tenant="other"))

    page1 = await store.list_workflows("acme", limit=2)
    assert [(w.name, w.version) for w in page1] == [("alpha", 1), ("bravo", 2)]
    assert page1[1].spec["step"] == 2
    page2 = await store.list_workflows("acme", limit=2, after_name=page1[-1].name)
    assert [w.name for w in page2] == ["charlie", "delta"]
    page3 = await store.list_workflows("acme", limit=2, after_name="delta")
    assert [w.name for w in page3] == ["echo"]
    assert await store.list_workflows("acme", limit=2, after_name="echo") == []
    assert [w.name for w in await store.list_workflows("other", limit=10)] == ["zulu"]


async def test_delete_workflow_removes_every_version(store: Store) -> None:
    await store.create_workflow(workflow())
    await store.create_workflow(workflow())
    await store.create_workflow(workflow("keep"))
    ex = await started(store, execution(workflow="wf"))

    assert await store.delete_workflow("acme", "wf") is True
    assert await store.delete_workflow("acme", "wf") is False
    assert await store.delete_workflow("acme", "never") is False
    assert await store.get_workflow("acme", "wf") is None
    assert await store.get_workflow("acme", "wf", 1) is None
    assert [w.name for w in await store.list_workflows("acme", limit=10)] == ["keep"]
    # Executions keep their own copy of what they run.
    assert (await store.get_execution(ex.id)).workflow == "wf"


# Executions -------------------------------------------------------------------------------


async def test_create_execution_round_trips_every_field(store: Store) -> None:
    record = full_execution()
    stored, created = await store.create_execution(record)
    assert created and stored == record
    assert await store.get_execution(record.id) == record
    assert await store.get_execution("missing") is None


async def test_create_execution_writes_nodes_and_events(store: Store) -> None:
    record = execution()
    await store.create_execution(
        record,
        [node(record.id, "a", NodeState.READY), node(record.id, "b", NodeState.PENDING)],
        [ev(record.id, 1, "execution.running")],
    )
    nodes = {n.node_id: n for n in await store.get_nodes(record.id)}
    assert {k: v.state for k, v in nodes.items()} == {"a": NodeState.READY, "b": NodeState.PENDING}
    assert [e.type for e in await store.list_events(record.id)] == ["execution.running"]


async def test_request_id_is_idempotent_per_tenant(store: Store) -> None:
    record = execution("ex-1", request_id="req")
    record.last_sequence = 1  # its newest event's
    first, created = await store.create_execution(record, [node("ex-1", "a")], [ev("ex-1", 1)])
    assert created
    again = execution("ex-2", request_id="req")
    again.input = {"q": "different"}
    existing, created = await store.create_execution(again, [node("ex-2", "a")], [ev("ex-2", 1)])
    assert created is False
    assert existing == first and existing.id == "ex-1"
    # The second call wrote nothing at all.
    assert await store.get_execution("ex-2") is None
    assert await store.get_nodes("ex-2") == []
    assert await store.list_events("ex-2") == []
    assert [e.id for e in await store.list_executions("acme", limit=10)] == ["ex-1"]

    # Another tenant's request ids are its own; no request id never collides.
    _, created = await store.create_execution(execution("ex-3", tenant="b", request_id="req"))
    assert created
    for i in (4, 5):
        _, created = await store.create_execution(execution(f"ex-{i}"))
        assert created


async def test_concurrent_starts_with_one_request_id_create_one_execution(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create_execution(execution(f"ex-{i}", request_id="same")) for i in range(10))
    )
    assert sum(created for _, created in results) == 1
    winner = next(r for r, created in results if created)
    assert {r.id for r, _ in results} == {winner.id}
    assert len(await store.list_executions("acme", limit=100)) == 1


async def test_list_executions_orders_filters_and_pages(store: Store) -> None:
    plan = [
        ("ex-05", "wf", ExecutionState.RUNNING, "acme"),
        ("ex-01", "wf", ExecutionState.SUCCEEDED, "acme"),
        ("ex-03", "other", ExecutionState.RUNNING, "acme"),
        ("ex-02", "wf", ExecutionState.FAILED, "acme"),
        ("ex-04", "wf", ExecutionState.RUNNING, "beta"),
    ]
    for id, wf, state, tenant in plan:
        await started(store, execution(id, workflow=wf, state=state, tenant=tenant))

    all_acme = await store.list_executions("acme", limit=10)
    assert [e.id for e in all_acme] == ["ex-01", "ex-02", "ex-03", "ex-05"]
    page = await store.list_executions("acme", limit=2)
    assert [e.id for e in page] == ["ex-01", "ex-02"]
    page = await store.list_executions("acme", limit=2, after_id="ex-02")
    assert [e.id for e in page] == ["ex-03", "ex-05"]
    assert await store.list_executions("acme", limit=2, after_id="ex-05") == []
    by_wf = await store.list_executions("acme", limit=10, workflow="wf")
    assert [e.id for e in by_wf] == ["ex-01", "ex-02", "ex-05"]
    by_state = await store.list_executions(
        "acme", limit=10, states=[ExecutionState.RUNNING, ExecutionState.FAILED]
    )
    assert [e.id for e in by_state] == ["ex-02", "ex-03", "ex-05"]
    both = await store.list_executions(
        "acme", limit=10, workflow="wf", states=[ExecutionState.RUNNING]
    )
    assert [e.id for e in both] == ["ex-05"]


async def test_list_executions_newest_first_and_by_creation_time(store: Store) -> None:
    """Newest first is descending id, paged by the last id seen (`after_id` then means older
    than it); the time bounds are half-open [created_after, created_before) on created_at and
    combine with the order, the paging and the other filters."""
    for i, (id, wf) in enumerate(
        [("ex-01", "wf"), ("ex-02", "other"), ("ex-03", "wf"), ("ex-04", "wf"), ("ex-05", "wf")]
    ):
        record = execution(id, workflow=wf)
        record.created_at = T0 + 10 * i
        await started(store, record)
    await started(store, execution("ex-06", tenant="beta"))

    async def ids(**kwargs: Any) -> list[str]:
        return [e.id for e in await store.list_executions("acme", **kwargs)]

    assert await ids(limit=10, newest_first=True) == ["ex-05", "ex-04", "ex-03", "ex-02", "ex-01"]
    assert await ids(limit=2, newest_first=True) == ["ex-05", "ex-04"]
    assert await ids(limit=2, newest_first=True, after_id="ex-04") == ["ex-03", "ex-02"]
    assert await ids(limit=2, newest_first=True, after_id="ex-01") == []
    # Bounds: created_after inclusive, created_before exclusive, at float precision.
    assert await ids(limit=10, created_after=T0 + 10) == ["ex-02", "ex-03", "ex-04", "ex-05"]
    assert await ids(limit=10, created_before=T0 + 20) == ["ex-01", "ex-02"]
    assert await ids(limit=10, created_after=T0 + 10, created_before=T0 + 30) == ["ex-02", "ex-03"]
    assert await ids(limit=10, created_after=T0 + 10.000001, created_before=T0 + 30.000001) == [
        "ex-03",
        "ex-04",
    ]
    assert await ids(limit=10, created_after=T0 + 100) == []
    window: dict[str, Any] = {"created_after": T0 + 10, "created_before": T0 + 40, "workflow": "wf"}
    assert await ids(limit=10, newest_first=True, **window) == ["ex-04", "ex-03"]
    assert await ids(limit=1, newest_first=True, after_id="ex-04", **window) == ["ex-03"]
    assert await ids(limit=1, after_id="ex-03", **window) == ["ex-04"]
    assert await ids(limit=10, newest_first=True, states=[ExecutionState.SUCCEEDED]) == []


async def test_list_unfinished_executions_spans_tenants(store: Store) -> None:
    states = list(ExecutionState)
    for i, state in enumerate(states):
        await started(store, execution(f"ex-{i:02d}", state=state, tenant=f"t{i % 3}"))
    unfinished = await store.list_unfinished_executions()
    assert sorted(e.state for e in unfinished) == sorted(s for s in states if not s.terminal)
    assert all(isinstance(e, ExecutionRecord) for e in unfinished)


# Commit -----------------------------------------------------------------------------------


async def test_commit_upserts_execution_and_nodes_and_appends_events(store: Store) -> None:
    ex = await started(store)
    await store.commit(Batch(nodes=[node(ex.id, "a", attempt=1)], events=[ev(ex.id, 1)]))

    ex.state = ExecutionState.SUCCEEDED
    ex.output = {"answer": 42}
    ex.last_sequence = 3
    done = node(
        ex.id,
        "a",
        NodeState.SUCCEEDED,
        attempt=1,
        input={"in": 1},
        output={"out": [1, 2]},
        started_at=T0,
        ended_at=T0 + 1,
        completed_order=1,
    )
    await store.commit(
        Batch(
            execution=ex,
            nodes=[done, node(ex.id, "b", NodeState.SKIPPED, skip_reason="when false")],
            events=[
                ev(ex.id, 2, "node.succeeded", node_id="a", data={"output": {"out": 1}}),
                ev(ex.id, 3, "execution.succeeded"),
            ],
        )
    )
    assert await store.get_execution(ex.id) == ex
    nodes = {n.node_id: n for n in await store.get_nodes(ex.id)}
    assert nodes["a"] == done
    assert nodes["b"].skip_reason == "when false"
    events = await store.list_events(ex.id)
    assert [(e.sequence, e.type) for e in events] == [
        (1, "node.running"),
        (2, "node.succeeded"),
        (3, "execution.succeeded"),
    ]
    assert events[1] == ev(ex.id, 2, "node.succeeded", node_id="a", data={"output": {"out": 1}})
    assert await store.list_unfinished_executions() == []


async def test_node_upsert_replaces_every_field(store: Store) -> None:
    ex = await started(store)
    await store.commit(
        Batch(nodes=[node(ex.id, "a", NodeState.RETRYING, error={"type": "x"}, wake_at=T0 + 5)])
    )
    await store.commit(Batch(nodes=[node(ex.id, "a", NodeState.RUNNING, attempt=2)]))
    (stored,) = await store.get_nodes(ex.id)
    assert stored == node(ex.id, "a", NodeState.RUNNING, attempt=2)  # error/wake_at cleared


async def test_commit_is_atomic_when_an_event_is_a_duplicate(store: Store) -> None:
    ex = await started(store)
    await store.add_signal(signal(ex.id, "s1"))
    await store.commit(Batch(nodes=[node(ex.id, "a")], events=[ev(ex.id, 1), ev(ex.id, 2)]))

    changed = execution(ex.id, state=ExecutionState.FAILED)
    bad = Batch(
        execution=changed,
        nodes=[node(ex.id, "a", NodeState.FAILED), node(ex.id, "new")],
        events=[ev(ex.id, 3, "fresh"), ev(ex.id, 2, "duplicate")],
        consumed_signals=[(ex.id, 1, "a")],
    )
    with pytest.raises(ValueError):
        await store.commit(bad)

    assert (await store.get_execution(ex.id)).state == ExecutionState.RUNNING
    assert [(n.node_id, n.state) for n in await store.get_nodes(ex.id)] == [
        ("a", NodeState.RUNNING)
    ]
    assert [(e.sequence, e.type) for e in await store.list_events(ex.id)] == [
        (1, "node.running"),
        (2, "node.running"),
    ]
    assert [s.signal_id for s in await store.pending_signals(ex.id)] == ["s1"]


async def test_commit_for_an_unknown_execution_fails(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.commit(Batch(events=[ev("ghost", 1)]))
    assert await store.list_events("ghost") == []


async def test_group_commit_of_200_concurrent_batches(store: Store, backend: Backend) -> None:
    ex = await started(store)
    batches = [
        Batch(
            nodes=[node(ex.id, f"n{i:03d}", NodeState.SUCCEEDED, output=i)],
            events=[ev(ex.id, i + 1, "node.succeeded", node_id=f"n{i:03d}")],
        )
        for i in range(200)
    ]
    await asyncio.gather(*(store.commit(b) for b in batches))

    nodes = await store.get_nodes(ex.id)
    assert sorted((n.node_id, n.output) for n in nodes) == [(f"n{i:03d}", i) for i in range(200)]
    events = await store.list_events(ex.id, limit=1000)
    assert [e.sequence for e in events] == list(range(1, 201))
    if backend.durable:
        assert store.writer.groups < 200, "concurrent commits were not grouped"


async def test_a_bad_batch_fails_alone_among_concurrent_commits(store: Store) -> None:
    ex = await started(store)
    await store.commit(Batch(events=[ev(ex.id, 1)]))
    good = [Batch(nodes=[node(ex.id, f"g{i}")], events=[ev(ex.id, i + 2)]) for i in range(20)]
    bad = Batch(nodes=[node(ex.id, "bad")], events=[ev(ex.id, 1, "duplicate")])
    results = await asyncio.gather(
        *(store.commit(b) for b in [*good[:10], bad, *good[10:]]), return_exceptions=True
    )
    assert [type(r).__name__ for r in results].count("ValueError") == 1
    assert isinstance(results[10], ValueError)
    assert len(await store.list_events(ex.id)) == 21
    assert "bad" not in {n.node_id for n in await store.get_nodes(ex.id)}


async def test_later_batches_win_within_a_group(store: Store) -> None:
    ex = await started(store)
    states = [NodeState.READY, NodeState.RUNNING, NodeState.SUCCEEDED]
    updates = []
    for i, state in enumerate(states):
        record = execution(ex.id)
        record.last_sequence = i + 1
        updates.append(Batch(execution=record, nodes=[node(ex.id, "a", state)]))
    await asyncio.gather(*(store.commit(b) for b in updates))
    assert (await store.get_execution(ex.id)).last_sequence == 3
    assert (await store.get_nodes(ex.id))[0].state == NodeState.SUCCEEDED


# Events -----------------------------------------------------------------------------------


async def test_list_events_after_sequence_with_limit(store: Store) -> None:
    ex = await started(store)
    other = await started(store)
    for seq in range(1, 11):
        await store.commit(Batch(events=[ev(ex.id, seq, data={"i": seq})]))
    await store.commit(Batch(events=[ev(other.id, 1)]))

    assert [e.sequence for e in await store.list_events(ex.id)] == list(range(1, 11))
    assert [e.sequence for e in await store.list_events(ex.id, after_sequence=7)] == [8, 9, 10]
    page = await store.list_events(ex.id, after_sequence=2, limit=3)
    assert [e.sequence for e in page] == [3, 4, 5]
    assert page[0].data == {"i": 3}
    assert await store.list_events(ex.id, after_sequence=10) == []
    assert await store.list_events("missing") == []

    seen, cursor = [], 0
    while batch := await store.list_events(ex.id, after_sequence=cursor, limit=4):
        seen += [e.sequence for e in batch]
        cursor = batch[-1].sequence
    assert seen == list(range(1, 11))


# Signals ----------------------------------------------------------------------------------


async def test_signals_get_monotonic_seq_per_execution(store: Store) -> None:
    ex, other = await started(store), await started(store)
    a, created = await store.add_signal(signal(ex.id, "s-a"))
    assert created and a.seq == 1 and a.consumed_by is None
    b, _ = await store.add_signal(signal(ex.id, "s-b", data=[1, "two"]))
    x, _ = await store.add_signal(signal(other.id, "s-a"))
    c, _ = await store.add_signal(signal(ex.id, "s-c", name="reject"))
    assert (a.seq, b.seq, c.seq, x.seq) == (1, 2, 3, 1)
    pending = await store.pending_signals(ex.id)
    assert [(s.signal_id, s.seq, s.name) for s in pending] == [
        ("s-a", 1, "approve"),
        ("s-b", 2, "approve"),
        ("s-c", 3, "reject"),
    ]
    assert pending[1] == b and pending[1].data == [1, "two"]


async def test_duplicate_signal_id_returns_the_stored_signal(store: Store) -> None:
    ex = await started(store)
    first, _ = await store.add_signal(signal(ex.id, "dup", data={"v": 1}))
    again, created = await store.add_signal(signal(ex.id, "dup", data={"v": 2}))
    assert created is False
    assert again == first and again.data == {"v": 1}
    assert len(await store.pending_signals(ex.id)) == 1


async def test_consumed_signals_leave_the_buffer(store: Store) -> None:
    ex = await started(store)
    for sid in ("s1", "s2", "s3"):
        await store.add_signal(signal(ex.id, sid))
    await store.commit(Batch(consumed_signals=[(ex.id, 2, "wait-node")], events=[ev(ex.id, 1)]))
    assert [s.signal_id for s in await store.pending_signals(ex.id)] == ["s1", "s3"]
    # A retried delivery of a consumed signal is still recognised, and says who took it.
    stored, created = await store.add_signal(signal(ex.id, "s2"))
    assert created is False and stored.consumed_by == "wait-node"
    # New signals keep counting after the consumed ones.
    late, _ = await store.add_signal(signal(ex.id, "s4"))
    assert late.seq == 4


async def test_a_batch_stores_its_signals_after_those_stored_before(store: Store) -> None:
    """`Batch.signals`: a signal stored by the turn that takes it, in the same commit."""
    ex = await started(store)
    await store.add_signal(signal(ex.id, "s1"))
    taken, kept = signal(ex.id, "s2", data={"n": 2}), signal(ex.id, "s3")
    taken.consumed_by = "ask"
    await store.commit(Batch(signals=[taken, kept], events=[ev(ex.id, 1)]))
    assert [(s.signal_id, s.seq) for s in await store.pending_signals(ex.id)] == [
        ("s1", 1),
        ("s3", 3),
    ]
    stored = await store.get_signal(ex.id, "s2")
    assert stored is not None and (stored.seq, stored.consumed_by, stored.data) == (
        2,
        "ask",
        {"n": 2},
    )
    late, _ = await store.add_signal(signal(ex.id, "s4"))
    assert late.seq == 4
    # A used signal id refuses the whole batch.
    with pytest.raises(ValueError):
        await store.commit(Batch(signals=[signal(ex.id, "s2")], events=[ev(ex.id, 2)]))
    assert [e.sequence for e in await store.list_events(ex.id)] == [1]
    assert len(await store.pending_signals(ex.id)) == 3


async def test_a_fenced_turn_stores_its_signals_and_a_stale_one_none(store: Store) -> None:
    """A turn's batch (its execution's row, fenced: the turn writers' own paths on SQL)
    stores its signals, several in one group each the next seq; a stale one stores none."""
    from agentrun.storage.base import LeaseLost

    a, b = await started(store), await started(store)
    await store.add_signal(signal(a.id, "before"))
    held = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}

    def turn(ex: ExecutionRecord, seq: int, *signals: SignalRecord) -> Batch:
        for sig in signals:
            sig.consumed_by = "ask" if sig.signal_id.endswith("taken") else None
        return Batch(
            execution=held[ex.id], events=[ev(ex.id, seq)], signals=list(signals), fence=("r1", 1)
        )

    await asyncio.gather(
        store.commit(turn(a, 1, signal(a.id, "a-taken", data={"x": [1.5, None]}))),
        store.commit(turn(b, 1, signal(b.id, "b-taken"), signal(b.id, "b-kept", data=[]))),
        store.commit(turn(a, 2, signal(a.id, "a-kept"))),
    )
    stored = {
        (ex.id, sid): await store.get_signal(ex.id, sid)
        for ex, sid in ((a, "before"), (a, "a-taken"), (a, "a-kept"), (b, "b-taken"), (b, "b-kept"))
    }
    assert {k: (s.seq, s.consumed_by) for k, s in stored.items() if s is not None} == {
        (a.id, "before"): (1, None),
        (a.id, "a-taken"): (2, "ask"),
        (a.id, "a-kept"): (3, None),
        (b.id, "b-taken"): (1, "ask"),
        (b.id, "b-kept"): (2, None),
    }
    assert stored[(a.id, "a-taken")].data == {"x": [1.5, None]}  # type: ignore[union-attr]
    assert stored[(b.id, "b-kept")].data == []  # type: ignore[union-attr]
    await store.release_leases("r1")
    await store.claim_executions("r2", lease_seconds=10, now=T0 + 1)
    with pytest.raises(LeaseLost):
        await store.commit(turn(a, 3, signal(a.id, "stale")))
    assert await store.get_signal(a.id, "stale") is None


async def test_list_waits_finds_pending_signal_waits_of_the_tenant(store: Store) -> None:
    ours, other, ended = (
        await started(store),
        await started(store, execution(tenant="globex")),
        await started(store),
    )

    def waiting(
        ex: ExecutionRecord, key: str, state: NodeState = NodeState.WAITING, wait: bool = True
    ) -> NodeRecord:
        record = (
            {"id": f"{ex.id}/{key}/1", "signal": "approve", "since": T0, "token_sha256": "ab"}
            if wait
            else None
        )
        return node(ex.id, key, state, attempt=1, wait=record)

    await store.commit(
        Batch(
            nodes=[
                waiting(ours, "m[10]"),
                waiting(ours, "m[2]"),
                waiting(ours, "ask"),
                waiting(ours, "done", NodeState.SUCCEEDED),  # its wait ended
                waiting(ours, "sleep", wait=False),  # a wait for a time, not a signal
                waiting(other, "ask"),
                waiting(ended, "ask"),
            ]
        )
    )
    await store.commit(Batch(execution=execution(ended.id, state=ExecutionState.CANCELLED)))
    listed = await store.list_waits("acme", limit=10)
    assert [(n.execution_id, n.node_id) for n in listed] == [
        (ours.id, "ask"),
        (ours.id, "m[10]"),
        (ours.id, "m[2]"),
    ]
    assert listed[0].wait == {
        "id": f"{ours.id}/ask/1",
        "signal": "approve",
        "since": T0,
        "token_sha256": "ab",
    }
    page = await store.list_waits("acme", limit=2, after=(ours.id, "ask"))
    assert [n.node_id for n in page] == ["m[10]", "m[2]"]
    assert [
        n.node_id
        for n in await store.list_waits(
            "acme", limit=10, execution_id=ours.id, after=(ours.id, "m[10]")
        )
    ] == ["m[2]"]
    assert [n.execution_id for n in await store.list_waits("globex", limit=10)] == [other.id]
    assert await store.list_waits("acme", limit=10, execution_id=other.id) == []


async def test_concurrent_signals_get_distinct_seqs(store: Store) -> None:
    ex = await started(store)
    results = await asyncio.gather(*(store.add_signal(signal(ex.id, f"s{i}")) for i in range(20)))
    assert sorted(s.seq for s, _ in results) == list(range(1, 21))
    assert len(await store.pending_signals(ex.id)) == 20


async def test_concurrent_workflow_versions_are_distinct(store: Store) -> None:
    results = await asyncio.gather(*(store.create_workflow(workflow(i=i)) for i in range(15)))
    assert sorted(w.version for w in results) == list(range(1, 16))


# Copies, durability -----------------------------------------------------------------------


async def test_returned_records_are_copies(store: Store) -> None:
    wf = workflow()
    created_wf = await store.create_workflow(wf)
    wf.name = "mutated-input"
    created_wf.description = "mutated-output"
    got = await store.get_workflow("acme", "wf")
    assert got.name == "wf" and got.description == "wf workflow"
    got.version = 77
    assert (await store.get_workflow("acme", "wf")).version == 1

    record = execution()
    record.last_sequence = 1  # its newest event's
    stored, _ = await store.create_execution(record, [node(record.id, "a")], [ev(record.id, 1)])
    assert stored is not record
    record.state = ExecutionState.FAILED
    stored.state = ExecutionState.CANCELLED
    fetched = await store.get_execution(record.id)
    assert fetched.state == ExecutionState.RUNNING
    fetched.last_sequence = 1000
    (await store.list_executions("acme", limit=1))[0].priority = 9
    again = await store.get_execution(record.id)
    assert again.last_sequence == 1 and again.priority == 0

    batch_node = node(record.id, "a", NodeState.SUCCEEDED)
    await store.commit(Batch(nodes=[batch_node]))
    batch_node.state = NodeState.FAILED
    (await store.get_nodes(record.id))[0].attempt = 5
    assert (await store.get_nodes(record.id))[0] == node(record.id, "a", NodeState.SUCCEEDED)

    (await store.list_events(record.id))[0].type = "changed"
    assert (await store.list_events(record.id))[0].type == "node.running"

    sig = signal(record.id, "s1")
    added, _ = await store.add_signal(sig)
    assert added is not sig and sig.seq == 0
    added.consumed_by = "someone"
    (await store.pending_signals(record.id))[0].name = "changed"
    pending = await store.pending_signals(record.id)
    assert pending[0].consumed_by is None and pending[0].name == "approve"


async def test_committed_data_survives_reopening(backend: Backend) -> None:
    if not backend.durable:
        pytest.skip("the memory store keeps nothing across processes")
    store = await backend.open()
    ex = await started(store, full_execution())
    await store.create_workflow(workflow())
    await store.commit(Batch(nodes=[node(ex.id, "a")], events=[ev(ex.id, 1)]))
    await store.add_signal(signal(ex.id, "s1"))
    await store.close()

    reopened = await backend.open()
    assert await reopened.get_execution(ex.id) == ex
    assert (await reopened.get_workflow("acme", "wf")).version == 1
    assert [n.node_id for n in await reopened.get_nodes(ex.id)] == ["a"]
    assert [e.sequence for e in await reopened.list_events(ex.id)] == [1]
    assert [s.seq for s in await reopened.pending_signals(ex.id)] == [1]


# Payloads ---------------------------------------------------------------------------------

# PostgreSQL's JSONB holds neither U+0000 nor lone surrogates (see test_errors.py); protobuf
# strings, the only way in from the API, cannot carry surrogates either.
_chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)  # NaN is not JSON
    | st.text(_chars, max_size=12)
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars, max_size=6), inner),
    max_leaves=12,
)


@settings(
    max_examples=int(__import__("os").environ.get("STORE_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=json_values)
async def test_json_payloads_round_trip(store: Store, value: object) -> None:
    record = execution()
    record.input = value
    record.vars = {"v": value}
    await store.create_execution(record)
    await store.commit(
        Batch(
            nodes=[node(record.id, "a", input=value, output=value)],
            events=[ev(record.id, 1, data={"v": value})],
        )
    )
    await store.add_signal(SignalRecord(record.id, "go", value, "s", T0))

    stored = await store.get_execution(record.id)
    assert (stored.input, stored.vars) == (value, {"v": value})
    (stored_node,) = await store.get_nodes(record.id)
    assert (stored_node.input, stored_node.output) == (value, value)
    assert (await store.list_events(record.id))[0].data == {"v": value}
    assert (await store.pending_signals(record.id))[0].data == value


async def test_floats_stay_floats(store: Store) -> None:
    """JSONB prints 1.5e+16 as 15000000000000000; expressions must not see an int instead."""
    value = {"big": 1.5e16, "odd": 5.608469866965534e16, "tiny": 1e-7, "huge": -2.5e300, "i": 3}
    record = execution()
    record.output = value
    await store.create_execution(record)
    output = (await store.get_execution(record.id)).output
    assert output == value
    assert {k: type(v) for k, v in output.items()} == {k: type(v) for k, v in value.items()}


# Payloads that are bare numbers: SQLite once stored them in columns of NUMERIC affinity, which
# converted each by its own parser (found by test_json_payloads_round_trip).
BARE_NUMBERS = [
    2.0662443630870376e-307,  # came back as 2.0662443630870372e-307
    2**63 + 5,  # beyond int64: came back as a float
    -(2**63) - 7,
    1e308,
    5e-324,
    1.0,  # came back as the int 1
    1.5e16,  # came back as the int 15000000000000000
    "12",  # a string that reads as a number stays a string
    "1e5",
]


@pytest.mark.parametrize("value", BARE_NUMBERS, ids=repr)
async def test_bare_numbers_round_trip_exactly(store: Store, value: object) -> None:
    """Every payload column (executions, nodes, events, signals, instances, history) gives
    back the same value of the same type, bit for bit."""
    record = execution()
    record.input = value
    await store.create_execution(record)
    record.output = value
    await store.commit(
        Batch(
            execution=record,
            nodes=[node(record.id, "a", input=value, output=value)],
            events=[ev(record.id, 1, data=value)],
        )
    )
    await store.add_signal(SignalRecord(record.id, "go", value, "s", T0))
    instance = await _instance_with(store, value)

    stored = await store.get_execution(record.id)
    (stored_node,) = await store.get_nodes(record.id)
    (event,) = await store.list_events(record.id)
    (sig,) = await store.pending_signals(record.id)
    instance_record = await store.instances.get_instance(instance.id)
    (entry,) = await store.instances.list_history(instance.id)
    got = [
        stored.input,
        stored.output,
        stored_node.input,
        stored_node.output,
        event.data,
        sig.data,
        instance_record.input,
        entry.event_data,
    ]
    assert [(type(v), repr(v)) for v in got] == [(type(value), repr(value))] * len(got)


async def test_negative_zero_stays_a_float_zero(store: Store, backend: Backend) -> None:
    """-0.0 is JSON. PostgreSQL's JSONB keeps numbers as `numeric`, which has no negative
    zero, so there it comes back as 0.0; memory and SQLite keep the sign. Everywhere it stays
    a float equal to zero (never the int 0, as SQLite's NUMERIC affinity made it)."""
    record = execution()
    record.input = -0.0
    await store.create_execution(record)
    await store.commit(
        Batch(nodes=[node(record.id, "a", output=[-0.0])], events=[ev(record.id, 1, data=-0.0)])
    )
    got = [
        (await store.get_execution(record.id)).input,
        (await store.get_nodes(record.id))[0].output[0],
        (await store.list_events(record.id))[0].data,
    ]
    sign = 1.0 if backend.name == "postgresql" else -1.0
    assert [(type(v), v, math.copysign(1.0, v)) for v in got] == [(float, 0.0, sign)] * 3


async def _instance_with(store: Store, value: object) -> InstanceRecord:
    machines = store.instances
    await machines.open()
    instance = InstanceRecord(
        id=f"in-{next(_ids):06d}",
        tenant="acme",
        workflow="wf",
        version=1,
        state=InstanceState.ACTIVE,
        current="a",
        data={},
        input=value,
        created_at=T0,
        updated_at=T0,
        last_sequence=1,
        entry_sequence=1,
    )
    entry = HistoryRecord(
        instance.id,
        1,
        EntryKind.CREATED,
        T0,
        event="start",
        event_id=None,
        event_data=value,
        from_state="a",
        to_state="a",
    )
    await machines.create_instance(instance, [entry])
    return instance


async def test_a_batch_repeating_a_sequence_fails_whole(
    store: Store, backend: Backend, request: pytest.FixtureRequest
) -> None:
    ex = await started(store)
    with pytest.raises(ValueError):
        await store.commit(
            Batch(nodes=[node(ex.id, "a")], events=[ev(ex.id, 1, "first"), ev(ex.id, 1, "again")])
        )
    assert await store.list_events(ex.id) == []
    assert await store.get_nodes(ex.id) == []


async def test_unknown_execution_is_a_key_error(store: Store) -> None:
    ghost = execution_record("ghost", tenant="t", workflow="w", created_at=T0)
    with pytest.raises(KeyError):
        await store.commit(Batch(execution=ghost))
    with pytest.raises(KeyError):
        await store.add_signal(SignalRecord("ghost", "go", None, "s1", T0))
    assert await store.get_execution("ghost") is None


# Leases -----------------------------------------------------------------------------------


async def test_claims_take_free_or_expired_leases_and_bump_the_epoch(store: Store) -> None:
    a = await started(store)
    b = await started(store)
    done = await started(store, execution(state=ExecutionState.SUCCEEDED))
    claimed = await store.claim_executions("r1", lease_seconds=10, now=T0)
    assert [c.id for c in claimed] == [a.id, b.id]
    assert {(c.owner, c.lease_epoch, c.lease_expires_at) for c in claimed} == {("r1", 1, T0 + 10)}
    # Held leases are not claimed by another replica, nor again by the holder by default.
    assert await store.claim_executions("r2", lease_seconds=10, now=T0 + 5) == []
    assert await store.claim_executions("r1", lease_seconds=10, now=T0 + 5) == []
    # A restarted holder takes its own back at once.
    again = await store.claim_executions("r1", lease_seconds=10, now=T0 + 5, include_own=True)
    assert [c.lease_epoch for c in again] == [2, 2]
    # Renewal keeps them; expiry lets another replica in with a new epoch.
    assert await store.renew_leases("r1", lease_seconds=10, now=T0 + 9) == {a.id, b.id}
    assert await store.claim_executions("r2", lease_seconds=10, now=T0 + 18) == []
    taken = await store.claim_executions("r2", lease_seconds=10, now=T0 + 20, limit=1)
    assert [(c.id, c.owner, c.lease_epoch) for c in taken] == [(a.id, "r2", 3)]
    assert await store.renew_leases("r1", lease_seconds=10, now=T0 + 20) == {b.id}
    assert done.id not in {
        c.id for c in await store.claim_executions("r3", lease_seconds=1, now=T0 + 99)
    }


async def test_claims_page_on_by_id(store: Store) -> None:
    """A restart claims its own in pages (engine/upkeep.py): with `include_own` a claimed row
    is claimable again, so `after_id` is what moves the page on; every row is claimed once."""
    ids = [(await started(store)).id for _ in range(5)]
    await started(store, execution(state=ExecutionState.SUCCEEDED))
    first = await store.claim_executions("r1", lease_seconds=10, now=T0, limit=2, include_own=True)
    assert [c.id for c in first] == ids[:2]
    second = await store.claim_executions(
        "r1", lease_seconds=10, now=T0, limit=2, include_own=True, after_id=first[-1].id
    )
    assert [c.id for c in second] == ids[2:4]
    last = await store.claim_executions(
        "r1", lease_seconds=10, now=T0, limit=2, include_own=True, after_id=second[-1].id
    )
    assert [c.id for c in last] == ids[4:]
    assert {(c.owner, c.lease_epoch) for c in first + second + last} == {("r1", 1)}
    # Others' expired leases page the same way.
    page = await store.claim_executions("r2", lease_seconds=10, now=T0 + 20, after_id=ids[2])
    assert [(c.id, c.owner, c.lease_epoch) for c in page] == [(i, "r2", 2) for i in ids[3:]]


async def test_claims_by_id_and_the_executions_a_replica_holds(store: Store) -> None:
    """A restart reads the ids it holds before its pages and claims those they skipped again
    by id (engine/upkeep.py `_retake_loop`): `held_executions` lists a replica's unfinished
    executions, `ids` limits a claim to those."""
    ids = [(await started(store)).id for _ in range(4)]
    done = await started(store, execution(state=ExecutionState.SUCCEEDED))
    assert await store.held_executions("r1") == set()
    await store.claim_executions("r1", lease_seconds=10, now=T0, limit=3)
    await store.claim_executions("r2", lease_seconds=10, now=T0)
    assert await store.held_executions("r1") == set(ids[:3])
    assert await store.held_executions("r2") == {ids[3]}
    again = await store.claim_executions(
        "r1", lease_seconds=10, now=T0 + 1, include_own=True, ids=[ids[2], ids[0], done.id]
    )
    assert [(c.id, c.owner, c.lease_epoch) for c in again] == [(ids[0], "r1", 2), (ids[2], "r1", 2)]
    # Another's held lease is not taken by id either.
    assert await store.claim_executions("r1", lease_seconds=10, now=T0 + 1, ids=[ids[3]]) == []


async def test_the_next_lease_expiry_is_of_owners_before_and_after_the_asker(store: Store) -> None:
    """Another replica's lease may be held by an owner whose id sorts before or after the
    asker's (the SQL stores read the two ranges apart); one with no owner is claimable now (0)."""
    for owner, seconds in (("m", 5), ("b", 10), ("z", 8)):
        await started(store)
        await store.claim_executions(owner, lease_seconds=seconds, now=T0, limit=1)
    assert await store.next_lease_expiry("m") == T0 + 8
    assert await store.next_lease_expiry("b") == T0 + 5
    assert await store.next_lease_expiry("z") == T0 + 5
    assert await store.next_lease_expiry("a") == T0 + 5
    await started(store)  # no owner
    assert await store.next_lease_expiry("m") == 0.0


async def test_a_replica_renewing_holds_its_executions_past_their_own_lease(store: Store) -> None:
    """Leases are renewed per replica (issue 18): a replica that renews keeps every execution
    it owns, though the SQL stores write only its own row (the answer None: nothing was
    taken); once it stops renewing, another replica claims them, and its next renewal says
    which it still holds."""
    from agentrun.storage.sql import SqlStore

    a, b = await started(store), await started(store)
    await store.claim_executions("r1", lease_seconds=10, now=T0)
    assert await store.renew_leases("r1", lease_seconds=10, now=T0 + 5) == {a.id, b.id}
    renewed = await store.renew_leases("r1", lease_seconds=10, now=T0 + 12)
    if isinstance(store, SqlStore):
        assert renewed is None  # one row: r1 held throughout
        assert (await store.get_execution(a.id)).lease_expires_at == T0 + 15
    else:
        assert renewed == {a.id, b.id}
    # Past the executions' own leases (T0 + 15), within r1's (T0 + 22): held.
    assert await store.claim_executions("r2", lease_seconds=10, now=T0 + 18) == []
    assert await store.next_lease_expiry("r2") == T0 + 22
    assert await store.next_lease_expiry("r1") is None
    # One at a time: the first claim spends r1's lease, the next finds it spent.
    taken = await store.claim_executions("r2", lease_seconds=10, now=T0 + 23, limit=1)
    taken += await store.claim_executions("r2", lease_seconds=10, now=T0 + 23, limit=1)
    assert [(x.id, x.owner, x.lease_epoch) for x in taken] == [(a.id, "r2", 2), (b.id, "r2", 2)]
    # r1 comes back (a pause, a frozen VM): its renewal finds nothing held any more.
    assert await store.renew_leases("r1", lease_seconds=10, now=T0 + 24) == set()
    # r2 renewed nothing: its claims' own leases ran out at T0 + 33.
    back = await store.claim_executions("r1", lease_seconds=10, now=T0 + 40)
    assert [(x.id, x.owner, x.lease_epoch) for x in back] == [(a.id, "r1", 3), (b.id, "r1", 3)]


async def test_a_group_of_fenced_commits_refuses_only_the_stale_one(store: Store) -> None:
    """Batches committed together share one transaction: the fence must hold for each of
    them (on PostgreSQL a multi-row check once went unchecked: asyncpg reports no row count)."""
    from agentrun.storage.base import LeaseLost

    a, b, c = await started(store), await started(store), await started(store)
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    await store.release_leases("r1")
    # b moves to r2; a and c are claimed back by r1 (epoch 3: after r2 took epoch 2 of b).
    taken = await store.claim_executions("r2", lease_seconds=10, now=T0 + 1, limit=1)
    assert [x.id for x in taken] == [a.id]
    again = {
        x.id: x
        for x in await store.claim_executions("r1", lease_seconds=10, now=T0 + 1, include_own=True)
    }
    assert set(again) == {b.id, c.id}
    stale = claimed[a.id]  # r1's old view of a, now r2's
    results = await asyncio.gather(
        store.commit(Batch(execution=again[b.id], events=[ev(b.id, 1)], fence=("r1", 2))),
        store.commit(
            Batch(
                execution=stale, nodes=[node(a.id, "stale")], events=[ev(a.id, 1)], fence=("r1", 1)
            )
        ),
        store.commit(Batch(execution=again[c.id], events=[ev(c.id, 1)], fence=("r1", 2))),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], LeaseLost), results
    assert await store.get_nodes(a.id) == []
    assert await store.list_events(a.id) == []
    assert [e.sequence for e in await store.list_events(b.id)] == [1]
    assert [e.sequence for e in await store.list_events(c.id)] == [1]


async def test_fenced_commit_is_refused_after_the_lease_moved(store: Store) -> None:
    from agentrun.storage.base import LeaseLost

    ex = await started(store)
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    await store.commit(Batch(execution=mine, events=[ev(ex.id, 1)], fence=("r1", 1)))
    await store.release_leases("r1")
    (theirs,) = await store.claim_executions("r2", lease_seconds=10, now=T0 + 1)
    assert theirs.lease_epoch == 2
    with pytest.raises(LeaseLost):
        await store.commit(
            Batch(
                execution=mine, nodes=[node(ex.id, "stale")], events=[ev(ex.id, 2)], fence=("r1", 1)
            )
        )
    assert await store.get_nodes(ex.id) == []
    assert [e.sequence for e in await store.list_events(ex.id)] == [1]
    await store.commit(Batch(execution=theirs, events=[ev(ex.id, 2)], fence=("r2", 2)))
    stored = await store.get_execution(ex.id)
    assert (stored.owner, stored.lease_epoch) == ("r2", 2)


async def test_restore_reads_are_get_nodes_and_pending_signals_of_each(store: Store) -> None:
    """Recovery reads many executions at once (issue 18): the same records as one by one."""
    ids = []
    for i in range(3):
        ex = await started(store, execution(f"ex-r{i}"))
        ids.append(ex.id)
        await store.commit(Batch(nodes=[node(ex.id, f"n{j}") for j in range(i)]))
        for j in range(i):
            await store.add_signal(signal(ex.id, f"s{j}"))
    await store.commit(Batch(consumed_signals=[(ids[2], 1, "n0")]))
    reads = await store.restore_reads([*ids, "ex-none"])
    assert set(reads) == {*ids, "ex-none"}
    assert reads["ex-none"] == ([], [])
    for execution_id in ids:
        nodes, signals = reads[execution_id]
        assert sorted(n.node_id for n in nodes) == sorted(
            n.node_id for n in await store.get_nodes(execution_id)
        )
        assert [s.signal_id for s in signals] == [
            s.signal_id for s in await store.pending_signals(execution_id)
        ]
    assert [s.signal_id for s in reads[ids[2]][1]] == ["s1"]


async def test_restore_read_is_get_execution_get_nodes_and_pending_signals(store: Store) -> None:
    """Reloading an unloaded run reads the store once (issue 18): the same records, every
    field and payload exact (bare numbers too), as the three reads it replaces."""
    ex = await started(store, full_execution("ex-restore"))
    await started(store, execution("ex-other"))
    odd = [2.0662443630870376e-307, 2**63 + 5, 1.0, 1.5e16, "12", None]
    await store.commit(
        Batch(
            nodes=[
                node(
                    ex.id,
                    "b",
                    NodeState.WAITING,
                    attempt=2,
                    input={"odd": odd},
                    output=1.0,
                    error={"type": "x"},
                    skip_reason="why",
                    started_at=T0 + 0.5,
                    ended_at=T0 + 0.75,
                    wake_at=T0 + 9.125,
                    completed_order=3,
                    usage={"tokens": 7},
                    wait={"id": "w1", "signal": "go"},
                    exhausted={"paused": True},
                ),
                node(ex.id, "a", NodeState.SUCCEEDED, output=2**63 + 5),
                node(ex.id, "map[0]", NodeState.RUNNING),
                node("ex-other", "a"),
            ]
        )
    )
    for i, data in enumerate([1.5e16, "s", None, {"x": odd}]):
        await store.add_signal(signal(ex.id, f"s{i}", data=data))
    await store.add_signal(signal("ex-other", "t"))
    await store.commit(Batch(consumed_signals=[(ex.id, 2, "a")]))

    read = await store.restore_read(ex.id)
    assert read is not None
    record, nodes, signals = read
    assert record == await store.get_execution(ex.id)
    assert nodes == await store.get_nodes(ex.id)
    assert sorted(n.node_id for n in nodes) == ["a", "b", "map[0]"]
    assert signals == await store.pending_signals(ex.id)
    assert [s.signal_id for s in signals] == ["s0", "s2", "s3"]
    by_id = {n.node_id: n for n in nodes}
    assert type(signals[0].data) is float and type(by_id["b"].output) is float
    assert by_id["a"].output == 2**63 + 5 and type(by_id["a"].output) is int
    assert await store.restore_read("ex-none") is None
    bare = await store.restore_read("ex-other")
    assert bare is not None and bare[0].id == "ex-other" and [n.node_id for n in bare[1]] == ["a"]
