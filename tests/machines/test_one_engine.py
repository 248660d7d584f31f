"""One Engine for executions and instances: built with `state_machines`, it builds its
MachineEngine, starts it after its executions and stops it with itself (as `serve` does)."""

from __future__ import annotations

import pytest

from agentrun.engine import Engine, EngineConfig, ShuttingDown, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.machines import InstanceState
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState

DOOR = """
name: door
mode: state_machine
initial: closed
states:
  closed: {on: {OPEN: open}}
  open: {on: {CLOSE: done}}
  done: {final: true}
"""

ECHO = """
name: echo
nodes:
  - {id: a, tool: {name: core.echo, args: {x: 1}}}
"""


def _engine(*, state_machines: bool = False) -> Engine:
    return Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(state_machines=state_machines),
    )


async def test_an_engine_for_state_machines_runs_executions_and_instances_and_stops_both() -> None:
    engine = _engine(state_machines=True)
    machines = engine.machines
    assert machines is not None
    await engine.start()
    await engine.create_workflow(load_workflow(DOOR))
    await engine.create_workflow(load_workflow(ECHO))
    execution = await engine.start_execution("echo")
    inst = await machines.create_instance("door")
    await machines.send_event(inst.id, "OPEN")
    _, entry = await machines.send_event(inst.id, "CLOSE")
    assert entry.instance_state is InstanceState.COMPLETED
    assert (await engine.wait(execution.id, timeout=10)).state is ExecutionState.SUCCEEDED
    await engine.stop(grace=0)
    assert machines.stopping
    with pytest.raises(ShuttingDown):
        await machines.create_instance("door")
    await engine.stop(grace=0)  # a second stop (serve's cleanup) stops nothing twice


async def test_an_engine_without_state_machines_leaves_them_to_whoever_installs_them() -> None:
    engine = _engine()
    assert engine.machines is None
    await engine.start()
    await engine.stop(grace=0)
