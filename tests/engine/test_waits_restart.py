"""Waits across a restart, on SQLite: an answer stored while no replica ran the execution (the
state a crash between AnswerWait's store and the run's commit leaves) is applied once, to its
own wait, when a replica takes the execution over; an answer stored for a wait that is not
pending is refused, never applied to another wait; pending waits keep their ids."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.approvals import answer_signal_id
from agentrun.engine.errors import IllegalTransition
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.records import ExecutionState, SignalRecord
from agentrun.storage.sql import SqlStore

pytestmark = pytest.mark.timeout(120)

MAPPED = """
name: mapped
nodes:
  - id: each
    map:
      items: "${{ input.docs }}"
      node:
        wait: {signal: review}
  - id: gate
    wait: {signal: gate}
output: {items: "${{ nodes.each.output }}", gate: "${{ nodes.gate.output }}"}
"""


async def engine_on(store: SqlStore, name: str) -> Engine:
    engine = Engine(
        store,
        tools=default_tools(),
        agents=default_agents(),
        config=EngineConfig(replica_id=name, lease_seconds=2, seed=3),
    )
    await engine.start()
    return engine


async def pending(engine: Engine, count: int) -> list:
    async with asyncio.timeout(60):
        while True:
            waits = await engine.list_waits()
            if len(waits) == count:
                return waits
            await asyncio.sleep(0.02)


async def test_an_answer_stored_before_a_crash_is_applied_once_after_it(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'waits.db'}")
    await store.open()
    first = await engine_on(store, "first")
    try:
        await first.create_workflow(load_workflow(MAPPED))
        execution = await first.start_execution("mapped", {"docs": ["a", "b", "c"]})
        before = {w.ref.key: w.ref.id for w in await pending(first, 4)}
    finally:
        await first.stop(grace=0)

    # No replica runs it: an answer stored now is what a crash right after AnswerWait's
    # store leaves. Beside it, an answer to a wait id that is not pending (a later attempt
    # of item 1 than the one waiting): it must not reach item 1's wait.
    await store.add_signal(
        SignalRecord(execution.id, "review", {"ok": 0}, answer_signal_id(before["each[0]"]), 1.0)
    )
    stale = f"{execution.id}/each[1]/7"
    await store.add_signal(
        SignalRecord(execution.id, "review", {"ok": "stale"}, answer_signal_id(stale), 1.0)
    )

    second = await engine_on(store, "second")
    try:
        after = {w.ref.key: w.ref.id for w in await pending(second, 3)}
        assert after == {
            k: v for k, v in before.items() if k != "each[0]"
        }  # same ids, item 0 answered
        for key, data in (("each[1]", {"ok": 1}), ("each[2]", {"ok": 2}), ("gate", "go")):
            await second.answer_wait(wait_id=after[key], data=data)
        with pytest.raises(IllegalTransition):
            await second.answer_wait(wait_id=before["each[0]"], data={"ok": "again"})
        final = await second.wait(execution.id, timeout=30)
        assert final.state is ExecutionState.SUCCEEDED
        assert final.output == {"items": [{"ok": 0}, {"ok": 1}, {"ok": 2}], "gate": "go"}
        events = await second.list_events(execution.id, limit=10_000)
        received = [e.data["wait_id"] for e in events if e.type == "signal.received"]
        assert sorted(received) == sorted(before.values())  # each wait answered once
        [refused] = [e.data for e in events if e.type == "signal.refused"]
        assert refused["signal_id"] == answer_signal_id(stale)
        consumed = {
            s.signal_id: s.consumed_by
            for s in [
                await store.get_signal(execution.id, answer_signal_id(i))
                for i in (*before.values(), stale)
            ]
        }
        assert consumed[answer_signal_id(before["each[0]"])] == "each[0]"
        assert consumed[answer_signal_id(stale)].startswith("refused:")
    finally:
        await second.stop(grace=0)
        await store.close()
