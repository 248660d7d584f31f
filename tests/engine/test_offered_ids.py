"""A loaded run remembers the ids of the signals offered to it (`Waits.offer`, engine/dag/
waits.py) so that an id offered again is declined (its caller then finds the stored one), not
applied twice; a long-running execution offered many signals remembers a bounded number of
them (OFFERED_KEPT beyond the current turn's) and declines, instead, an offer sent before
it forgot the committed ones."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.dag import waits as waits_module
from agentrun.engine.dag.waits import Waits
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, SignalRecord

ITEMS = 12
MAPPED = f"""
name: mapped
nodes:
  - id: each
    map:
      items: "${{{{ input.docs }}}}"
      max_concurrency: {ITEMS}
      node:
        wait: {{signal: review}}
"""


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(seed=7, unload_idle=False),  # the run stays loaded
    )
    await engine.start()
    await engine.create_workflow(load_workflow(MAPPED))
    yield engine
    await engine.stop(grace=0)


async def test_the_offered_ids_a_run_remembers_are_bounded(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waits_module, "OFFERED_KEPT", 4)
    ex = await engine.start_execution("mapped", {"docs": list(range(ITEMS))})
    run = engine.runs.get(ex.id)
    assert run is not None
    waits: Waits = run.fold.waits
    for i in range(ITEMS - 2):
        await engine.signal(ex.id, "review", i, signal_id=f"s{i}")
        stored = await engine.store.get_signal(ex.id, f"s{i}")
        assert stored is not None and stored.consumed_by is not None, "taken in its turn"
        assert len(waits.offered) <= 4 + 1, "remembered ids are bounded"
    assert not waits.declining and waits.forgot_at is not None
    assert "s0" not in waits.offered

    # A repeat of a forgotten id sent now finds it stored: answered as the first, not applied.
    await engine.signal(ex.id, "review", 0, signal_id="s0")
    # One sent before the ids were forgotten (its caller looked for it in the store before
    # its commit) is declined, not applied twice: the run goes on, and its caller stores it.
    late = SignalRecord(ex.id, "review", 0, "s0", waits.forgot_at)
    await run.offer_signal(late)
    assert late.consumed_by is None and waits.declining
    assert not run.finished

    # The items left take the next two signals (stored first, since one was declined).
    for i in range(ITEMS - 2, ITEMS):
        await engine.signal(ex.id, "review", i, signal_id=f"s{i}")
    final = await engine.wait(ex.id, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"each": list(range(ITEMS))}
    events = await engine.list_events(ex.id, limit=1000)
    assert [e.type for e in events].count("signal.received") == ITEMS
