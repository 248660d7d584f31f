"""A signal to a run here is stored by the turn that applies it: one commit (issue 18), and a
signal answered is never lost, across a kill -9 too; signals keep their order when a run
keeps some for later waits."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.errors import Unavailable
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.records import ExecutionState, NodeState
from tests.durability import test_start_one_commit as starts
from tests.durability.common import Child, children
from tests.durability.test_start_one_commit import Counting
from tests.engine.conftest import eventually

CHILD = Path(__file__).with_name("signal_child.py")
# The memory store and SQLite, each behind a `Counting` store (writes recorded, commits failed).
store = starts.store

APPROVE = """
name: approve
nodes:
  - {id: ask, wait: {signal: go}}
  - {id: after, needs: [ask], pass: {value: "${{ nodes.ask.output }}"}}
"""

TWICE = """
name: twice
nodes:
  - {id: first, wait: {signal: go}}
  - {id: nap, needs: [first], wait: {duration: 500ms}}
  - {id: second, needs: [nap], wait: {signal: go}}
  - {id: third, needs: [second], wait: {signal: go}}
"""


@pytest.fixture
async def engine(store: Counting) -> AsyncIterator[Engine]:
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id="a"),
    )
    await engine.start()
    for text in (APPROVE, TWICE):
        await engine.create_workflow(load_workflow(text))
    yield engine
    await engine.stop(grace=0)


async def unloaded(engine: Engine, execution_id: str) -> None:
    await eventually(lambda: execution_id in engine.runs.idle)


async def until_answered(send: Callable[[], Awaitable[object]]) -> None:
    """Sends again while the call answers UNAVAILABLE (its run stopped, being rebuilt)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await send()
            return
        except Unavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def test_a_signal_to_a_waiting_execution_is_one_commit(
    engine: Engine, store: Counting
) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    store.writes.clear()
    answered = await engine.signal(ex.id, "go", {"ok": 1}, signal_id="s1")
    assert store.writes == ["commit"]  # not add_signal, then the turn's commit
    assert answered.state is not ExecutionState.WAITING  # answered after the turn
    stored = await store.get_signal(ex.id, "s1")
    assert stored is not None and (stored.seq, stored.consumed_by) == (1, "ask")
    final = await engine.wait(ex.id, 5)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"after": {"ok": 1}}
    # A repeat answers as the first call did, and changes nothing.
    writes = len(store.writes)
    await engine.signal(ex.id, "go", {"ok": 1}, signal_id="s1")
    assert await store.pending_signals(ex.id) == []
    assert "commit" not in store.writes[writes:]


async def test_a_signal_whose_turn_was_not_committed_is_not_answered(
    engine: Engine, store: Counting
) -> None:
    ex = await engine.start_execution("approve", {})
    await unloaded(engine, ex.id)
    store.fail_commits = 1
    with pytest.raises(Unavailable):
        await engine.signal(ex.id, "go", {"ok": 1}, signal_id="s1")
    assert await store.get_signal(ex.id, "s1") is None

    # The run stopped and is rebuilt from the store; the retried signal applies once.
    await until_answered(lambda: engine.signal(ex.id, "go", {"ok": 1}, signal_id="s1"))
    final = await engine.wait(ex.id, 5)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"after": {"ok": 1}}
    events = await engine.list_events(ex.id)
    assert [e.type for e in events].count("signal.received") == 1


async def test_signals_a_run_keeps_for_later_waits_keep_their_order(
    engine: Engine, store: Counting
) -> None:
    """The first is taken by the wait; the others, sent while no wait is pending, are kept
    (stored first, as before) and taken by the next waits in the order they were sent."""
    ex = await engine.start_execution("twice", {})
    await unloaded(engine, ex.id)
    for i in range(4):
        store.writes.clear()
        await engine.signal(ex.id, "go", i, signal_id=f"s{i}")
        # The first in its turn's commit; the others stored first (the turn that keeps one
        # may commit after the call returned).
        assert store.writes == ["commit"] if i == 0 else "add_signal" in store.writes
    final = await engine.wait(ex.id, 5)
    assert final.state is ExecutionState.SUCCEEDED
    nodes = {n.node_id: n for n in await store.get_nodes(ex.id)}
    assert [nodes[n].output for n in ("first", "second", "third")] == [0, 1, 2]
    signals = {f"s{i}": await store.get_signal(ex.id, f"s{i}") for i in range(4)}
    assert [(s.seq, s.consumed_by) for s in signals.values() if s is not None] == [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (4, None),
    ]


def _acked(ledger: Path) -> list[str]:
    return ledger.read_text().split() if ledger.exists() else []


def _stored(db: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    """Signals by execution (their consumer) and each execution's `ask` node state."""
    conn = sqlite3.connect(db)
    try:
        signals = dict(conn.execute("SELECT execution_id, consumed_by FROM signals").fetchall())
        asks = dict(
            conn.execute("SELECT execution_id, state FROM nodes WHERE node_id = 'ask'").fetchall()
        )
    finally:
        conn.close()
    return signals, asks


# Five child processes, each started, loaded and killed in turn: 8-13 s on an idle machine,
# 35-70 s under stress-ng --cpu 4, past the default 60 s (its own waits allow a child 60 s).
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["signal", "answer"])
def test_an_answered_signal_survives_kill_9(tmp_path: Path, mode: str) -> None:
    """Signals sent one after another to waiting executions (by name, or as the answer to
    each one's wait: AnswerWait), the process killed at random moments: every signal answered
    before a kill is stored and applied (its wait node SUCCEEDED) in the file the kill left;
    after the last run, each execution took its signal once."""
    rng = random.Random(18)
    db, ledger = tmp_path / "agentrun.db", tmp_path / "ledger.txt"
    url = f"sqlite+aiosqlite:///{db}"
    count, kills = 120, 4
    with children() as procs:
        for generation in range(kills + 1):
            child = Child(
                [sys.executable, str(CHILD), url, str(ledger), str(count), mode],
                tmp_path / f"child-{generation}.log",
            )
            procs.append(child.start())
            child.wait_line("ready", timeout=60)
            if generation == kills:
                child.wait_line("done", timeout=120)
                assert child.proc is not None and child.proc.wait(30) == 0, child.tail()
                break
            time.sleep(rng.uniform(0.05, 0.4))
            child.kill()
            signals, asks = _stored(db)
            lost = [i for i in _acked(ledger) if signals.get(i) != "ask" or asks[i] != "SUCCEEDED"]
            # Answered after the turn that applied it: stored, consumed, its wait over.
            assert not lost, f"generation {generation}: answered, not applied: {lost[:5]}"
    signals, asks = _stored(db)
    # A kill between a signal's commit and its answer: applied, not in the ledger.
    assert len(_acked(ledger)) >= count - kills
    assert len(signals) == count and set(signals.values()) == {"ask"}
    assert set(asks.values()) == {NodeState.SUCCEEDED.value}
    conn = sqlite3.connect(db)
    try:
        states = {s for (s,) in conn.execute("SELECT state FROM executions")}
        received = conn.execute(
            "SELECT execution_id, count(*) FROM events WHERE type = 'signal.received'"
            " GROUP BY execution_id"
        ).fetchall()
    finally:
        conn.close()
    assert states == {"SUCCEEDED"}
    assert len(received) == count and {n for _, n in received} == {1}
