"""An answer to a wait (AnswerWait) whose run is here is one commit, as a signal is
(test_signal_one_commit): the turn that applies the answer stores it; the call answers after
that commit, and a run that stops first answers UNAVAILABLE with nothing stored, so a retry
applies it once. Requests refused before the run (schema, unknown wait or execution, a wait
that ended) write nothing and name the field. Counted on the memory store and SQLite behind
a `Counting` store; the kill -9 guarantee is test_signal_one_commit's, run for answers too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.approvals import answer_signal_id
from agentrun.engine.errors import (
    ExecutionNotFound,
    IllegalTransition,
    InvalidArgument,
    Unavailable,
)
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.factory import open_store
from agentrun.storage.records import ExecutionState, SignalRecord
from tests.durability import test_signal_one_commit as signals
from tests.durability.test_start_one_commit import Counting

# The memory store and SQLite, each behind a `Counting` store; an engine on it (replica a).
store = signals.store
engine = signals.engine

ASKED = """
name: asked
nodes:
  - id: ask
    wait: {signal: go, schema: {type: object, required: [ok], properties: {ok: {type: integer}}}}
  - {id: after, needs: [ask], pass: {value: "${{ nodes.ask.output }}"}}
"""


async def waiting(engine: Engine) -> tuple[str, str]:
    """A started `asked` execution, its run unloaded while it waits: its id and its wait's."""
    await engine.create_workflow(load_workflow(ASKED))
    ex = await engine.start_execution("asked", {})
    await signals.unloaded(engine, ex.id)
    [wait] = await engine.list_waits(execution_id=ex.id)
    return ex.id, wait.ref.id


async def test_an_answer_to_a_waiting_execution_is_one_commit(
    engine: Engine, store: Counting
) -> None:
    execution_id, wait_id = await waiting(engine)
    store.writes.clear()
    record, view = await engine.answer_wait(wait_id=wait_id, data={"ok": 1})
    assert store.writes == ["commit"]  # not add_signal, then the turn's commit
    assert not view.pending and record.state is not ExecutionState.WAITING  # after the turn
    stored = await store.get_signal(execution_id, answer_signal_id(wait_id))
    assert stored is not None and (stored.seq, stored.consumed_by) == (1, "ask")
    final = await engine.wait(execution_id, 5)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"after": {"ok": 1}}
    # Answered again: refused, nothing written.
    writes = len(store.writes)
    with pytest.raises(IllegalTransition):
        await engine.answer_wait(wait_id=wait_id, data={"ok": 1})
    assert store.writes[writes:] == []


async def test_refused_requests_write_nothing_and_name_the_field(
    engine: Engine, store: Counting
) -> None:
    execution_id, wait_id = await waiting(engine)
    store.writes.clear()
    for data, where in (({"ok": "yes"}, "data.ok"), ({}, "data")):
        with pytest.raises(InvalidArgument) as exc:
            await engine.answer_wait(wait_id=wait_id, data=data)
        assert [d.path for d in exc.value.diagnostics] == [where]
    with pytest.raises(InvalidArgument) as exc:
        await engine.answer_wait(wait_id=f"{execution_id}/nope/1", data={"ok": 1})
    assert [d.path for d in exc.value.diagnostics] == ["wait_id"]
    with pytest.raises(ExecutionNotFound):
        await engine.answer_wait(wait_id="missing/ask/1", data={"ok": 1})
    assert store.writes == []
    [pending] = await engine.list_waits(execution_id=execution_id)
    assert pending.pending and pending.ref.id == wait_id


async def test_an_answer_whose_turn_was_not_committed_is_unavailable(
    engine: Engine, store: Counting
) -> None:
    execution_id, wait_id = await waiting(engine)
    store.fail_commits = 1
    with pytest.raises(Unavailable):
        await engine.answer_wait(wait_id=wait_id, data={"ok": 1})
    assert await store.get_signal(execution_id, answer_signal_id(wait_id)) is None

    # The run stopped and is rebuilt from the store; the answer sent again applies once.
    await signals.until_answered(lambda: engine.answer_wait(wait_id=wait_id, data={"ok": 1}))
    final = await engine.wait(execution_id, 5)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"after": {"ok": 1}}
    events = await engine.list_events(execution_id)
    assert [e.type for e in events].count("signal.received") == 1


async def test_an_answer_to_a_run_on_another_replica_is_stored_first(tmp_path: Path) -> None:
    """The replica that takes the call does not run the execution: it stores the answer
    (add_signal) and hears its outcome once the owner applied it (one commit there)."""
    url = f"sqlite:///{tmp_path / 'agentrun.db'}"
    stores = [Counting(await open_store(url)) for _ in range(2)]
    owner, other = [
        Engine(
            s,
            tools=Registry(core_tools()),
            agents=default_agents(),
            config=EngineConfig(replica_id=r),
        )
        for s, r in zip(stores, "ab", strict=True)
    ]
    try:
        await owner.start()
        await other.start()
        execution_id, wait_id = await waiting(owner)
        for s in stores:
            s.writes.clear()
        _, view = await other.answer_wait(wait_id=wait_id, data={"ok": 2})
        assert not view.pending
        asked, owning = stores[1].writes, stores[0].writes
        assert (asked.count("add_signal"), asked.count("commit")) == (1, 0)
        assert (owning.count("add_signal"), owning.count("commit")) == (0, 1)
        stored = await stores[1].get_signal(execution_id, answer_signal_id(wait_id))
        assert stored is not None and stored.consumed_by == "ask"
        final = await other.wait(execution_id, 10)
        assert final.output == {"after": {"ok": 2}}
    finally:
        for e in (owner, other):
            await e.stop(grace=0)
        for s in stores:
            await s.inner.close()


@pytest.mark.parametrize("theirs", [{"ok": 7}, {"ok": 1}])
async def test_an_answer_racing_one_stored_by_another_replica_hears_the_stored_way(
    engine: Engine, store: Counting, monkeypatch: pytest.MonkeyPatch, theirs: dict[str, int]
) -> None:
    """Two answers to one wait at once, one on another replica (stored first) and one here
    (handed to the run): the other's row is in before this turn commits, which the unique
    (execution, signal id) then refuses, and the run stops. This call answers as the stored
    way would have: ANSWERED for other data, the stored answer's outcome for the same data;
    not UNAVAILABLE, which asks for a retry that can only be refused. (The same data heard
    once the stored one was applied is ANSWERED too, as any answer after it.)"""
    execution_id, wait_id = await waiting(engine)
    signal_id = answer_signal_id(wait_id)
    call = Counting._call
    stored_first: list[SignalRecord] = []

    async def racing(self: Counting, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "commit" and not stored_first:
            if any(s.signal_id == signal_id for s in args[0].signals):
                other = SignalRecord(execution_id, "go", theirs, signal_id, engine.clock())
                stored_first.append(other)
                await self.inner.add_signal(other)  # the other replica's add_signal
        return await call(self, name, *args, **kwargs)

    monkeypatch.setattr(Counting, "_call", racing)
    try:
        record, view = await engine.answer_wait(wait_id=wait_id, data={"ok": 1})
    except IllegalTransition as refused:
        assert refused.current_state == "ANSWERED"
    else:  # the same data: the stored answer's outcome, if heard before it was applied
        assert theirs == {"ok": 1} and not view.pending and record.id == execution_id
    assert stored_first
    final = await engine.wait(execution_id, 10)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"after": theirs}
