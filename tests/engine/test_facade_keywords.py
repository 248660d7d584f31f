"""The façades' keywords are declared once (StartOptions, LogPage, Since, RunFilter) and keep the
behaviour of a written-out signature: the defaults hold, the keywords reach where they go, and an
unknown keyword is a TypeError naming it, for executions and state machine instances alike."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrun.engine import Engine, load_workflow
from agentrun.engine.machine import MachineEngine
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState
from tests.engine.conftest import Harness

DAG = "name: keywords\nnodes:\n  - {id: a, pass: {value: 1}}\n"
MACHINE = json.dumps(
    {
        "name": "light",
        "mode": "state_machine",
        "initial": "red",
        "states": {"red": {"on": {"GO": "green"}}, "green": {"on": {"STOP": "red"}}},
    }
)


async def test_execution_keywords_reach_their_places_and_unknown_ones_are_refused(
    harness: Harness,
) -> None:
    engine = harness.engine
    await engine.create_workflow(load_workflow(DAG))
    first = await engine.start_execution(
        "keywords", {"x": 1}, request_id="r1", labels={"team": "a"}, version=1
    )
    again = await engine.start_execution("keywords", {"x": 1}, request_id="r1", version=1)
    assert again.id == first.id and first.labels == {"team": "a"} and first.tenant == "default"
    final = await engine.wait(first.id, timeout=10)
    assert final.state is ExecutionState.SUCCEEDED
    with pytest.raises(TypeError, match="'tenatn'"):
        await engine.start_execution("keywords", tenatn="x")
    events = await engine.list_events(first.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.sequence for e in await engine.list_events(first.id, after_sequence=2, limit=1)] == [
        3
    ]
    watched = [e.sequence async for e in engine.watch(first.id, after_sequence=len(events) - 1)]
    assert watched == [len(events)]
    listed = await engine.list_executions(workflow="keywords", states=[ExecutionState.SUCCEEDED])
    assert [r.id for r in listed] == [first.id]
    assert await engine.list_executions(tenant="other") == []
    with pytest.raises(TypeError, match="wrkflow"):
        await engine.list_executions(wrkflow="keywords")
    with pytest.raises(TypeError, match="aftr"):
        await engine.list_events(first.id, aftr=1)


async def test_instance_keywords_reach_their_places_and_unknown_ones_are_refused() -> None:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    machines = MachineEngine(engine)
    await engine.start()
    await machines.start()
    try:
        await engine.create_workflow(load_workflow(MACHINE), tenant="t1")
        inst = await machines.create_instance(
            "light", request_id="r1", labels={"team": "b"}, tenant="t1"
        )
        again: Any = await machines.create_instance("light", request_id="r1", tenant="t1")
        assert again.id == inst.id and inst.labels == {"team": "b"} and inst.tenant == "t1"
        with pytest.raises(TypeError, match="'tenatn'"):
            await machines.create_instance("light", tenatn="x")
        await machines.send_event(inst.id, "GO", tenant="t1")
        history = await machines.list_history(inst.id, tenant="t1")
        assert len(history) == 2
        assert [h.sequence for h in await machines.list_history(inst.id, tenant="t1", limit=1)] == [
            1
        ]
        listed = await machines.list_instances(tenant="t1", current="green")
        assert [r.id for r in listed] == [inst.id]
        assert await machines.list_instances(tenant="t1", current="red") == []
        with pytest.raises(TypeError, match="curent"):
            await machines.list_instances(tenant="t1", curent="red")
    finally:
        await machines.stop()
        await engine.stop(grace=0)
