"""pg_turns.py: a group of one turn of one existing execution takes the statement's `one`
variant (the execution's parameters scalars, `_one_params`, fenced in the UPDATE's WHERE),
which must write what the group's statement writes and refuse what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.storage import pg_turns
from agentrun.storage.base import LeaseLost
from agentrun.storage.executions import _Rows
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
)
from agentrun.storage.sql import SqlStore
from tests.storage.factories import execution_record

T0 = 1_700_000_000.0
_SAME = {"input": {"x": 1}, "created_at": T0}


def _node(execution_id: str, node_id: str, **kw: Any) -> NodeRecord:
    return NodeRecord(execution_id=execution_id, node_id=node_id, state=NodeState.RUNNING, **kw)


def _shapes(execution: ExecutionRecord, fence: tuple[str, int] | None) -> list[Batch]:
    """Turns of `execution` in the shapes `_one_params` builds, one after another."""
    id_ = execution.id
    execution.output = {"total": 1.0, "items": [1, "two", None], "s": "é"}
    execution.vars = {"n": 3}
    execution.usage = {"tokens": 7.0}
    execution.last_sequence = 2
    execution.started_at = 1_700_000_001  # an int into a float column
    two = Batch(
        execution=execution,
        nodes=[
            _node(id_, "a", attempt=1, output=2.0, started_at=5, ended_at=6.5, usage={"c": 0.25}),
            _node(id_, "b"),
        ],
        events=[
            EventRecord(id_, 1, "node.succeeded", T0, "a", {"output": 2.0}),
            EventRecord(id_, 2, "node.running", 7, "b", None),
        ],
        fence=fence,
    )
    bare = Batch(execution=execution, fence=fence)  # no node, no event
    twice = Batch(
        execution=execution,
        nodes=[_node(id_, "c"), _node(id_, "c", attempt=2, output={"k": [1]})],
        events=[EventRecord(id_, 3, "node.running", T0 + 1, "c", None)],
        fence=fence,
    )
    ended = copy_ended(execution)
    last = Batch(
        execution=ended,
        nodes=[_node(id_, "c", attempt=2, output=None)],
        events=[
            EventRecord(id_, 4, "node.succeeded", T0 + 2, "c", {"x": None}),
            EventRecord(id_, 5, "execution.succeeded", T0 + 3, None, {"output": 1}),
            EventRecord(id_, 6, "execution.noted", T0 + 3, None, None),
        ],
        fence=fence,
    )
    return [two, bare, twice, last]


def copy_ended(execution: ExecutionRecord) -> ExecutionRecord:
    import copy

    ended = copy.copy(execution)
    ended.state = ExecutionState.SUCCEEDED
    ended.ended_at = T0 + 9
    ended.error = None
    ended.last_sequence = 6
    return ended


@pytest.mark.parametrize("fence", [None, ("r1", 3)])
def test_one_params_are_the_groups_arrays_one_element_each(fence: Any) -> None:
    for batch in _shapes(execution_record("ex-1", **_SAME), fence):
        rows = _Rows.of(batch)
        one = pg_turns._one_params(rows)
        group = pg_turns._params([rows])
        assert one is not None and group is not None
        assert one[0] == group[0]
        args, arrays = one[1], group[1]
        assert len(args) == len(arrays)
        scalars = len(pg_turns.FENCE) + len(one[0][0])
        for i, (got, array) in enumerate(zip(args, arrays, strict=True)):
            if i < scalars:
                assert [got] == array
                assert type(got) is type(array[0])
            else:
                assert got == array


def test_what_the_one_variant_leaves_to_the_group() -> None:
    execution = execution_record("ex-1", **_SAME)
    signal = SignalRecord("ex-1", 0, "go", None, "s1", T0)
    other = execution_record("ex-2", **_SAME)
    for batch in (
        Batch(execution=execution, consumed_signals=[("ex-1", 1, "a")]),
        Batch(execution=execution, signals=[signal]),
        Batch(execution=execution, nodes=[_node("ex-2", "a")]),
        Batch(execution=execution, events=[EventRecord("ex-2", 1, "x", T0, None, None)]),
        Batch(execution=None, nodes=[_node("ex-2", "a")]),
    ):
        assert pg_turns._one_params(_Rows.of(batch)) is None
    create = _Rows(execution=None, nodes=[], events=[], consumed=[], create=other)
    assert pg_turns._one_params(create) is None


def test_the_one_variant_has_the_groups_parameters_as_scalars() -> None:
    key = pg_turns._one_params(_Rows.of(_shapes(execution_record("ex-1", **_SAME), None)[0]))
    assert key is not None
    for notify in (False, True):
        group = pg_turns._statement(*key[0], notify=notify)
        one = pg_turns._statement(*key[0], notify=notify, one=True)
        assert "(VALUES ($1::text, $2::bool" in one and "locked" not in one
        assert "unnest($1::" not in one and "unnest($1::" in group
        assert one.count("pg_notify") == group.count("pg_notify") == int(notify)


@pytest.fixture
async def store(pg_server: Any) -> AsyncIterator[SqlStore]:
    store = SqlStore(pg_server.create_database())
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _stored(store: SqlStore, execution_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of the execution's rows as PostgreSQL holds them (text), id left out."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with store.database.connect() as conn:
        for table, key, order in (
            ("executions", "id", "id"),
            ("nodes", "execution_id", "node_id"),
            ("events", "execution_id", "sequence"),
        ):
            result = await conn.exec_driver_sql(
                f"SELECT to_jsonb(t) - '{key}' - 'request_id' FROM {table} t "
                f"WHERE {key} = $1 ORDER BY {order}",
                (execution_id,),
            )
            out[table] = [tuple(row) for row in result]
    return out


async def test_postgres_one_turn_writes_what_the_group_writes(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same turns of two executions, one's through the `one` variant, the other's
    through the group's statement: every column of their rows reads back the same."""
    for id_ in ("ex-one", "ex-group"):
        await store.create_execution(execution_record(id_, **_SAME))
    claimed = {x.id: x for x in await store.claim_executions("r1", lease_seconds=10, now=T0)}
    writer = store.database.turn_writer()
    assert writer is not None
    used: list[bool] = []
    real = pg_turns._statement

    def statement(*key: Any, one: bool = False, **kw: Any) -> str:
        used.append(one)
        return real(*key, one=one, **kw)

    monkeypatch.setattr(pg_turns, "_statement", statement)
    fence = (claimed["ex-one"].owner, claimed["ex-one"].lease_epoch)
    assert fence == (claimed["ex-group"].owner, claimed["ex-group"].lease_epoch)
    for id_ in ("ex-one", "ex-group"):
        if id_ == "ex-group":
            monkeypatch.setattr(pg_turns, "_one_params", lambda batch: None)
        for batch in _shapes(claimed[id_], fence):  # type: ignore[arg-type]
            assert await writer([_Rows.of(batch)]) == [None]
    assert used[::2] == [True] * 4 + [False] * 4  # (each turn: the loud and quiet statement)
    one = await _stored(store, "ex-one")
    assert len(one["nodes"]) == 3 and len(one["events"]) == 6
    assert one == await _stored(store, "ex-group")
    stored = await store.get_execution("ex-one")
    assert stored is not None and stored.state is ExecutionState.SUCCEEDED
    assert stored.output == {"total": 1.0, "items": [1, "two", None], "s": "é"}


async def test_postgres_one_turn_refused_by_its_fence_writes_nothing(store: SqlStore) -> None:
    await store.create_execution(execution_record("ex-a", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    await store.release_leases("r1")
    (theirs,) = await store.claim_executions("r2", lease_seconds=10, now=T0 + 1)
    assert theirs.lease_epoch == mine.lease_epoch + 1  # type: ignore[operator]
    stale = _shapes(mine, ("r1", mine.lease_epoch))[0]  # type: ignore[arg-type]
    writer = store.database.turn_writer()
    assert writer is not None
    assert await writer([_Rows.of(stale)]) == [UNWRITTEN]
    with pytest.raises(LeaseLost):
        await store.commit(stale)
    assert await store.get_nodes("ex-a") == []
    assert await store.list_events("ex-a") == []
    stored = await store.get_execution("ex-a")
    assert stored is not None and stored.output is None and stored.owner == "r2"


async def test_postgres_one_turn_is_fenced_against_a_lease_taken_meanwhile(
    store: SqlStore,
) -> None:
    """The `one` variant's UPDATE holds the fence in its own WHERE: a take-over committed by
    another transaction while the turn waits for the row's lock is seen on the row's newest
    version, and the stale turn writes nothing (LeaseLost)."""
    import asyncpg

    await store.create_execution(execution_record("ex-a", **_SAME))
    (mine,) = await store.claim_executions("r1", lease_seconds=10, now=T0)
    url = str(store.database.url)
    other = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        taking = other.transaction()
        await taking.start()
        await other.execute(
            "UPDATE executions SET owner = 'r2', lease_epoch = lease_epoch + 1 WHERE id = $1",
            "ex-a",
        )
        turn = _shapes(mine, ("r1", mine.lease_epoch))[0]  # type: ignore[arg-type]
        commit = asyncio.ensure_future(store.commit(turn))
        await asyncio.sleep(0.3)
        assert not commit.done()  # waits for the row's lock
        await taking.commit()
        with pytest.raises(LeaseLost):
            await commit
    finally:
        await other.close()
    assert await store.get_nodes("ex-a") == []
    assert await store.list_events("ex-a") == []
    stored = await store.get_execution("ex-a")
    assert stored is not None and stored.output is None
    assert (stored.owner, stored.lease_epoch) == ("r2", mine.lease_epoch + 1)  # type: ignore[operator]
