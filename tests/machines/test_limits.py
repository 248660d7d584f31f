"""State machine actions take scheduler slots (issue 14): a per-target limit holds across
instances, and across instances and DAG executions calling the same tool."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.machine import MachineEngine
from agentrun.engine.ports import CallContext, Tool
from agentrun.engine.scheduler import SchedulerConfig
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore

MACHINE = """
name: busy
mode: state_machine
initial: idle
states:
  idle:
    on:
      GO: {target: done, actions: [{tool: {name: test.narrow}}]}
  done: {final: true}
"""

DAG = """
name: dag
nodes:
  - {id: a, tool: {name: test.narrow}}
  - {id: b, tool: {name: test.narrow}}
"""


class Narrow(Tool):
    """`test.narrow`: counts the calls running at once; each waits until `release` is set."""

    name = "test.narrow"

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.calls = 0
        self.release = asyncio.Event()

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.running += 1
        self.calls += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            await asyncio.sleep(0.01)
        finally:
            self.running -= 1
        return {}


async def test_a_per_target_limit_holds_for_actions_and_nodes_together() -> None:
    narrow = Narrow()
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), narrow]),
        agents=default_agents(),
        config=EngineConfig(scheduler=SchedulerConfig(max_running_per_target={"test.narrow": 1})),
    )
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    try:
        await engine.create_workflow(load_workflow(MACHINE))
        await engine.create_workflow(load_workflow(DAG))
        instances = [await machines.create_instance("busy") for _ in range(4)]
        sends = [asyncio.create_task(machines.send_event(i.id, "GO")) for i in instances]
        execution = await engine.start_execution("dag", {})
        async with asyncio.timeout(30):
            while engine.scheduler.stats.queued < 5:  # one runs, four wait for the slot
                await asyncio.sleep(0.01)
        assert narrow.running == 1
        narrow.release.set()
        await asyncio.wait_for(asyncio.gather(*sends), 30)
        final = await engine.wait(execution.id, timeout=30)
        assert final.state.value == "SUCCEEDED"
        assert narrow.calls == 6 and narrow.most == 1
        assert engine.scheduler.stats.running == 0 and engine.scheduler.stats.queued == 0
    finally:
        await machines.stop()
        await engine.stop(grace=0)


async def test_an_action_waiting_for_a_slot_gives_it_back_when_its_instance_stops() -> None:
    narrow = Narrow()
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), narrow]),
        agents=default_agents(),
        config=EngineConfig(scheduler=SchedulerConfig(max_running_per_target={"test.narrow": 1})),
    )
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    await engine.create_workflow(load_workflow(MACHINE))
    first, second = [await machines.create_instance("busy") for _ in range(2)]
    sends = [asyncio.create_task(machines.send_event(i.id, "GO")) for i in (first, second)]
    async with asyncio.timeout(30):
        while engine.scheduler.stats.queued < 1:
            await asyncio.sleep(0.01)
    for task in sends:
        task.cancel()
    await asyncio.gather(*sends, return_exceptions=True)
    assert engine.scheduler.stats.running == 0 and engine.scheduler.stats.queued == 0
    await machines.stop()
    await engine.stop(grace=0)
