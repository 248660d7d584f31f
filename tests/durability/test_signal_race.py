"""SignalExecution with a caller-chosen signal id, sent to two replicas at once (several
servers on one database): the replica that runs the execution hands the signal, not stored,
to its run (one commit), while the other stores it first. The other's row is in before the
owner's turn commits, which the unique (execution, signal id) refuses: the owner's run stops
and is rebuilt from the store. The owner's caller is answered as the stored signal's was (a
retry of the same signal), or AlreadyExists for other data; never UNAVAILABLE, which asks for
a retry that can only find the id stored. SQLite and PostgreSQL (the replicas of
test_idle_executions)."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import load_workflow
from agentrun.engine.errors import AlreadyExists
from agentrun.storage.records import Batch, ExecutionRecord, ExecutionState
from tests.durability import test_idle_executions as idle
from tests.engine.test_idle_unload import APPROVE

replicas = idle.replicas


@pytest.mark.parametrize("theirs", [{"n": 7}, {"n": 1}])
async def test_a_signal_racing_one_another_replica_stored_is_answered_the_stored_way(
    replicas: idle.Replica, monkeypatch: pytest.MonkeyPatch, theirs: dict[str, int]
) -> None:
    a = await replicas("a")
    b = await replicas("b")
    await a.create_workflow(load_workflow(APPROVE))
    ex = await a.start_execution("approve", {})
    await idle.unloaded(a, ex.id)
    commit = a.store.commit
    raced: list[ExecutionRecord] = []

    async def racing(batch: Batch, *args: Any, **kwargs: Any) -> None:
        if not raced and any(s.signal_id == "s1" for s in batch.signals):
            # Replica b, which does not run it, stores the same id first.
            raced.append(await b.signal(ex.id, "go", theirs, signal_id="s1"))
        await commit(batch, *args, **kwargs)

    monkeypatch.setattr(a.store, "commit", racing)
    at_once = a.store.commit_at_once
    if at_once is not None:
        # SQLite writes most turns at once, without the commit coroutine the race is put in:
        # the signal's turn declined there (as a turn the store cannot write now is) goes on
        # to `commit`, where replica b stores the same id first.
        def declining(batch: Batch) -> bool:
            if not raced and any(s.signal_id == "s1" for s in batch.signals):
                return False
            return at_once(batch)

        monkeypatch.setattr(a.store, "commit_at_once", declining)
    try:
        record = await a.signal(ex.id, "go", {"n": 1}, signal_id="s1")
    except AlreadyExists:
        assert theirs != {"n": 1}, "the same signal is a retry, answered as the stored one"
    else:
        assert theirs == {"n": 1} and record.id == ex.id
    assert raced and raced[0].id == ex.id
    final = await a.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"after": {"got": theirs}}
    stored = await a.store.get_signal(ex.id, "s1")
    assert stored is not None and (stored.data, stored.consumed_by) == (theirs, "ask")
    events = await a.list_events(ex.id)
    assert [e.type for e in events].count("signal.received") == 1
