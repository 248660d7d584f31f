"""Tenants, secrets, and the DAG side of the hybrid wired exactly as docs/REQUESTS-machines.md asks."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.machine import InstanceNotFound, MachineEngine
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from tests.machines.conftest import instance_exists, until

DOOR = """
name: door
mode: state_machine
initial: closed
states:
  closed:
    on:
      OPEN:
        target: open
        actions: [{tool: {name: core.echo, args: {token: "${{ secrets.door_key }}"}}}]
        assign: {who: "${{ event.data.who }}"}
  open: {on: {CLOSE: done}}
  done: {final: true}
"""


async def _engine(**config: Any) -> tuple[Engine, MachineEngine]:
    engine = Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(**config),
    )
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    return engine, machines


async def test_tenants_see_only_their_instances() -> None:
    engine, machines = await _engine()
    await engine.create_workflow(load_workflow(DOOR), tenant="acme")
    inst = await machines.create_instance("door", tenant="acme")
    for call in (
        machines.get_instance(inst.id, tenant="globex"),
        machines.send_event(inst.id, "OPEN", {"who": "x"}, tenant="globex"),
        machines.list_history(inst.id, tenant="globex"),
    ):
        with pytest.raises(InstanceNotFound):
            await call
    assert await machines.list_instances(tenant="globex") == []
    assert [r.id for r in await machines.list_instances(tenant="acme")] == [inst.id]
    await machines.stop()
    await engine.stop(grace=0)


async def test_secrets_never_reach_the_stored_history() -> None:
    engine, machines = await _engine(secrets={"door_key": "s3cr3t-value"})
    await engine.create_workflow(load_workflow(DOOR))
    inst = await machines.create_instance("door")
    _, entry = await machines.send_event(inst.id, "OPEN", {"who": "s3cr3t-value"})
    assert entry.actions[0]["output"] == {"token": "s3cr3t-value"}  # the live answer
    stored = await machines.list_history(inst.id)
    assert "s3cr3t-value" not in repr(stored)
    assert "s3cr3t-value" not in repr(await machines.get_instance(inst.id))
    await machines.stop()
    await engine.stop(grace=0)


PARENT = """
name: parent
nodes:
  - id: door
    workflow: {name: door, input: {}}
  - id: after
    needs: [door]
    pass: {value: "${{ nodes.door.output.state }}"}
output: "${{ {'final': nodes.after.output, 'data': nodes.door.output.data} }}"
"""


async def test_a_dag_workflow_node_runs_a_state_machine() -> None:
    """Engine._run_child hands a `workflow` node naming a state machine to the MachineEngine."""
    engine, machines = await _engine(secrets={"door_key": "k" * 8})
    await engine.create_workflow(load_workflow(DOOR))
    await engine.create_workflow(load_workflow(PARENT))
    execution = await engine.start_execution("parent", {})
    instance_id = f"{execution.id}.door.1"
    await until(lambda: instance_exists(machines, instance_id))
    await machines.send_event(instance_id, "OPEN", {"who": "ann"})
    await machines.send_event(instance_id, "CLOSE")
    final = await engine.wait(execution.id, timeout=10)
    assert final.state.value == "SUCCEEDED"
    assert final.output == {"final": "done", "data": {"who": "ann"}}
    await machines.stop()
    await engine.stop(grace=0)
