"""State machine action retries are store rows (issue 14): while an action waits for its next
attempt, the instance holds the event as its `pending` one with a retry timer; events sent
meanwhile wait behind it; a restart takes the event up again with the right attempt number."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.storage.machines import EntryKind, InstanceState
from tests.machines.conftest import close, make, open_backend, until

RETRYING = """
name: retrying
mode: state_machine
initial: idle
data: {log: []}
states:
  idle:
    entry: [{tool: {name: test.gate, args: {label: enter}}, retry: {max_attempts: 1000, backoff: fixed, initial_interval: 20ms}}]
    on:
      GO:
        target: busy
        actions:
          - tool: {name: test.record, args: {label: first}}
          - tool: {name: test.gate, args: {label: go}}
            retry: {max_attempts: 1000, backoff: fixed, initial_interval: 20ms}
        assign: {log: "${{ data.log + ['go'] }}"}
  busy:
    on:
      NOTE: {target: busy, assign: {log: "${{ data.log + [event.data] }}"}}
      DONE: finished
  finished: {final: true}
"""


class Gate(Tool):
    """`test.gate`: fails each attempt of a label until `opened` holds the label."""

    name = "test.gate"

    def __init__(self) -> None:
        self.opened: set[str] = set()
        self.calls: list[tuple[str, str, int]] = []
        # Set: attempts after the first wait for it (the test reads a stable store meanwhile).
        self.pause: asyncio.Event | None = None

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append((ctx.execution_id, args["label"], ctx.attempt))
        if self.pause is not None and ctx.attempt >= 2:
            await self.pause.wait()
        if args["label"] not in self.opened:
            raise ToolFailure("tool_error", f"{args['label']} is closed")
        return {"attempt": ctx.attempt}


async def _harness(store: Any, opened: tuple[str, ...] = ()) -> Any:
    gate = Gate()
    gate.opened.update(opened)
    h = await make(store, gate)
    await h.define(RETRYING)
    return h, gate


@pytest.fixture(params=["memory", "sqlite"])
async def setup(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    store = await open_backend(request.param, tmp_path)
    h, gate = await _harness(store)
    yield h, gate, store
    await close(h)
    await store.close()


async def test_the_waiting_retry_is_a_stored_pending_event_with_a_timer(setup) -> None:
    h, gate, _ = setup
    gate.opened.add("enter")
    gate.pause = asyncio.Event()
    i = await h.machines.create_instance("retrying")
    sending = asyncio.create_task(h.machines.send_event(i.id, "GO", event_id="go"))
    # Attempt 2 runs (and waits): the store holds the event pending since attempt 1 failed.
    await until(lambda: sum(1 for c in gate.calls if c[1] == "go") >= 2)
    stored = await h.machines.store.get_instance(i.id)
    assert stored.pending is not None and stored.current == "idle" and stored.last_sequence == 1
    assert stored.pending["event"]["name"] == "GO" and stored.pending["event"]["id"] == "go"
    assert [r["path"] for r in stored.pending["done"]] == ["states.idle.on.GO[0].actions[0]"]
    timers = await h.machines.store.list_timers(instance_id=i.id)
    assert [t.key for t in timers] == [stored.pending["key"]]
    assert timers[0].key.startswith("retry:")
    assert stored.pending["attempt"] == 2
    gate.opened.add("go")
    gate.pause.set()
    rec, entry = await asyncio.wait_for(sending, 30)
    assert (rec.current, rec.data, entry.kind) == ("busy", {"log": ["go"]}, EntryKind.TRANSITION)
    # Each attempt ran once, with its number; the action before it ran once.
    attempts = [c[2] for c in gate.calls if c[1] == "go"]
    assert attempts == [1, 2]
    assert h.recorder.calls == ["first"]
    assert [(a["path"][-10:], a["attempts"]) for a in entry.actions] == [
        ("actions[0]", 1),
        ("actions[1]", len(attempts)),
    ]
    stored = await h.machines.store.get_instance(i.id)
    assert stored.pending is None and await h.machines.store.list_timers(instance_id=i.id) == []


async def test_events_sent_during_a_retry_wait_behind_it_in_order(setup) -> None:
    h, gate, _ = setup
    gate.opened.add("enter")
    i = await h.machines.create_instance("retrying")
    go = asyncio.create_task(h.machines.send_event(i.id, "GO"))
    await until(lambda: any(c[1] == "go" for c in gate.calls))
    notes = [asyncio.create_task(h.machines.send_event(i.id, "NOTE", n)) for n in range(3)]
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in notes)
    gate.opened.add("go")
    await asyncio.wait_for(go, 30)
    await asyncio.wait_for(asyncio.gather(*notes), 30)
    rec = await h.machines.get_instance(i.id)
    assert rec.data["log"] == ["go", 0, 1, 2]
    history = await h.machines.list_history(i.id)
    assert [e.event for e in history] == ["create", "GO", "NOTE", "NOTE", "NOTE"]


async def test_a_cancelled_sender_leaves_the_retry_running(setup) -> None:
    h, gate, _ = setup
    gate.opened.add("enter")
    i = await h.machines.create_instance("retrying")
    go = asyncio.create_task(h.machines.send_event(i.id, "GO", event_id="go"))
    await until(lambda: any(c[1] == "go" for c in gate.calls))
    await asyncio.sleep(0.01)
    go.cancel()
    with pytest.raises(asyncio.CancelledError):
        await go
    gate.opened.add("go")
    _, entry = await h.machines.send_event(i.id, "GO", event_id="go")  # the same event
    assert entry.sequence == 2 and entry.to_state == "busy"
    assert len(await h.machines.list_history(i.id)) == 2


async def test_an_initial_entry_action_retry_holds_the_creation(setup) -> None:
    h, gate, _ = setup
    creating = asyncio.create_task(h.machines.create_instance("retrying", request_id="c"))
    await until(lambda: len(gate.calls) >= 1)
    gate.opened.add("enter")
    rec = await asyncio.wait_for(creating, 30)
    assert rec.state is InstanceState.ACTIVE and rec.current == "idle" and rec.last_sequence == 1
    history = await h.machines.list_history(rec.id)
    assert [(e.kind, e.to_state) for e in history] == [(EntryKind.CREATED, "idle")]
    assert history[0].actions[0]["attempts"] == len(gate.calls) >= 2
    assert (await h.machines.store.get_instance(rec.id)).pending is None


async def test_a_retry_waiting_at_a_restart_runs_its_next_attempt_after_it(tmp_path) -> None:
    """The in-process twin of test_retry_restart.py: the machine engine stops while the
    action waits for attempt 2, another starts on the same database and finishes the event."""
    store = await open_backend("sqlite", tmp_path)
    h, gate = await _harness(store)
    gate.opened.add("enter")
    i = await h.machines.create_instance("retrying")
    go = asyncio.create_task(h.machines.send_event(i.id, "GO", event_id="go"))
    await until(lambda: any(c[1] == "go" for c in gate.calls))
    await until(lambda: _pending(h.machines, i.id))
    await close(h)
    with pytest.raises(BaseException):  # noqa: B017 - stopped under it (ShuttingDown or cancelled)
        await asyncio.wait_for(go, 30)
    await store.close()
    ran = [c[2] for c in gate.calls if c[1] == "go"]

    store = await open_backend("sqlite", tmp_path)
    h, gate2 = await _harness(store, ("enter", "go"))
    try:
        await until(lambda: _state(h, i.id, "busy"))
        assert [c[2] for c in gate2.calls if c[1] == "go"] == [len(ran) + 1]
        assert h.recorder.calls == []  # the action before it is not called again
        history = await h.machines.list_history(i.id)
        assert [(e.event, e.event_id, e.to_state) for e in history[1:]] == [("GO", "go", "busy")]
        assert history[1].actions[1]["attempts"] == len(ran) + 1
    finally:
        await close(h)
        await store.close()


async def _pending(machines: Any, instance_id: str) -> bool:
    return (await machines.store.get_instance(instance_id)).pending is not None


async def _state(h: Any, instance_id: str, current: str) -> bool:
    return (await h.machines.store.get_instance(instance_id)).current == current


async def test_a_pending_event_is_stored_without_secrets() -> None:
    from agentrun.engine import Engine, EngineConfig, load_workflow
    from agentrun.engine.machine import MachineEngine
    from agentrun.integrations import Registry, default_agents
    from agentrun.integrations.core_tools import core_tools
    from agentrun.storage.memory import MemoryStore

    gate = Gate()
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), gate]),
        agents=default_agents(),
        config=EngineConfig(secrets={"door_key": "s3cr3t-value"}),
    )
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    try:
        await engine.create_workflow(
            load_workflow(
                RETRYING.replace("name: retrying", "name: secretive")
                .replace(
                    "{name: test.record, args: {label: first}}",
                    '{name: core.echo, args: {token: "${{ secrets.door_key }}"}}',
                )
                .replace(
                    "entry: [{tool: {name: test.gate, args: {label: enter}}",
                    "entry: [{tool: {name: core.echo, args: {}}",
                )
            )
        )
        i = await machines.create_instance("secretive")
        go = asyncio.create_task(machines.send_event(i.id, "GO", {"who": "s3cr3t-value"}))
        await until(lambda: any(c[1] == "go" for c in gate.calls))
        await until(lambda: _pending(machines, i.id))
        stored = await machines.store.get_instance(i.id)
        assert stored.pending["done"][0]["ok"] and "s3cr3t-value" not in repr(stored)
        gate.opened.add("go")
        _, entry = await asyncio.wait_for(go, 30)
        assert entry.actions[0]["output"] == {"token": "s3cr3t-value"}  # the live answer
        assert "s3cr3t-value" not in repr(await machines.list_history(i.id))
    finally:
        await machines.stop()
        await engine.stop(grace=0)
