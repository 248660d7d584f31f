"""State machine instances are observed as executions are (issue 14): their history entries
go to the event bus (caught up from the store after an outage, secrets masked) and to the
metrics (`agentrun_instance*`)."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.machine import MachineEngine
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.integrations.events import BusPublisher, MemoryBus
from agentrun.server.observability import Metrics
from agentrun.server.observability.instrumentation import Telemetry
from tests.machines.conftest import open_backend

DOOR = """
name: door
mode: state_machine
initial: closed
states:
  closed:
    on:
      OPEN:
        target: open
        actions: [{tool: {name: core.echo, args: {token: "${{ secrets.key }}"}}}]
  open: {on: {CLOSE: done, KNOCK: open}}
  done: {final: true}
"""


async def _engine(store: Any, **config: Any) -> tuple[Engine, MachineEngine]:
    engine = Engine(
        store, tools=Registry(core_tools()), agents=default_agents(), config=EngineConfig(**config)
    )
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    await engine.create_workflow(load_workflow(DOOR))
    return engine, machines


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_instance_entries_reach_the_bus_in_order_and_after_an_outage(
    backend: str, tmp_path: Any
) -> None:
    store = await open_backend(backend, tmp_path)
    engine, machines = await _engine(store, secrets={"key": "s3cr3t-value"})
    bus = MemoryBus()
    publisher = BusPublisher(engine.store, bus, retry_interval=0.05, max_retry_interval=0.1)
    publisher.attach(engine.hub)
    await publisher.start()
    try:
        inst = await machines.create_instance("door")
        await machines.send_event(inst.id, "OPEN")
        await publisher.drained()
        bus.available = False
        await machines.send_event(inst.id, "KNOCK")  # committed while the bus is down
        await machines.send_event(inst.id, "CLOSE")
        bus.available = True
        await publisher.drained()
        events = bus.for_execution(inst.id)
        assert [(e.id, e.type, e.data["event"]) for e in events] == [
            (f"{inst.id}:1", "instance.created", "create"),
            (f"{inst.id}:2", "instance.transition", "OPEN"),
            (f"{inst.id}:3", "instance.transition", "KNOCK"),
            (f"{inst.id}:4", "instance.transition", "CLOSE"),
        ]
        assert {(e.tenant, e.workflow) for e in events} == {("default", "door")}
        assert events[-1].data["instance_state"] == "COMPLETED"
        assert events[1].data["actions"][0]["ok"] is True
        assert "s3cr3t-value" not in repr(events)
    finally:
        await publisher.stop()
        await machines.stop()
        await engine.stop(grace=0)
        await store.close()


async def test_instance_metrics() -> None:
    from agentrun.storage.memory import MemoryStore

    metrics = Metrics()
    engine, machines = await _engine(
        MemoryStore(), secrets={"key": "k"}, instrumentation=Telemetry(metrics=metrics)
    )
    try:
        done = await machines.create_instance("door")
        for event in ("OPEN", "KNOCK", "CLOSE"):
            await machines.send_event(done.id, event)
        left = await machines.create_instance("door")
        await machines.cancel_instance(left.id)
        with pytest.raises(Exception, match="does not accept"):
            await machines.send_event((await machines.create_instance("door")).id, "CLOSE")
        sample = metrics.registry.get_sample_value
        assert sample("agentrun_instances_started_total", {"workflow": "door"}) == 3
        assert (
            sample("agentrun_instance_entries_total", {"workflow": "door", "kind": "CREATED"}) == 3
        )
        assert (
            sample("agentrun_instance_entries_total", {"workflow": "door", "kind": "TRANSITION"})
            == 3
        )
        assert (
            sample("agentrun_instance_entries_total", {"workflow": "door", "kind": "REJECTED"}) == 1
        )
        assert (
            sample("agentrun_instance_entries_total", {"workflow": "door", "kind": "CANCELLED"})
            == 1
        )
        for status in ("COMPLETED", "CANCELLED"):
            labels = {"workflow": "door", "status": status}
            assert sample("agentrun_instances_finished_total", labels) == 1
            assert sample("agentrun_instance_duration_seconds_count", labels) == 1
    finally:
        await machines.stop()
        await engine.stop(grace=0)
