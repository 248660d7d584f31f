"""Engine semantics of state machines (FORMAT.md, State machines), on the memory store and
SQLite: guards, action order, errors, rejections, idempotent event ids, timers, reenter,
invoke, cancel and the DAG hook."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine.errors import AlreadyExists, IllegalTransition
from agentrun.engine.machine import EventNotAccepted, GuardFailed
from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.storage.machines import EntryKind, InstanceState
from tests.machines.conftest import history_longer_than, instance_exists, until

ORDER = """
name: order
mode: state_machine
initial: pending
data: {paid: 0, tries: 0}
states:
  pending:
    on:
      PAY:
        - guard: "${{ event.data.amount >= input.total }}"
          target: paid
          assign: {paid: "${{ event.data.amount }}"}
        - guard: "${{ event.data.amount > 0 }}"
          target: pending
          assign: {tries: "${{ data.tries + 1 }}"}
      CANCEL: cancelled
  paid: {on: {SHIP: shipped}}
  shipped: {final: true}
  cancelled: {final: true}
"""


async def test_guards_in_order_first_that_holds_wins(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 10})
    rec, entry = await h.machines.send_event(i.id, "PAY", {"amount": 3})
    assert (rec.current, entry.transition_index, rec.data) == (
        "pending",
        1,
        {"paid": 0, "tries": 1},
    )
    rec, entry = await h.machines.send_event(i.id, "PAY", {"amount": 0})
    assert entry.kind is EntryKind.NO_TRANSITION and entry.transition_index is None
    assert rec.current == "pending" and rec.data["tries"] == 1
    rec, entry = await h.machines.send_event(i.id, "PAY", {"amount": 12})
    assert (rec.current, entry.transition_index, entry.assigned) == ("paid", 0, {"paid": 12})
    rec, _ = await h.machines.send_event(i.id, "SHIP")
    assert rec.state is InstanceState.COMPLETED and rec.current == "shipped"
    with pytest.raises(IllegalTransition):
        await h.machines.send_event(i.id, "SHIP")
    stored = await h.machines.get_instance(i.id)
    assert (stored.state, stored.current, stored.data) == (
        InstanceState.COMPLETED,
        "shipped",
        {"paid": 12, "tries": 1},
    )


async def test_unhandled_event_is_rejected_with_the_accepted_ones_and_recorded(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 10})
    with pytest.raises(EventNotAccepted) as caught:
        await h.machines.send_event(i.id, "SHIP", {"x": 1}, event_id="s1")
    assert caught.value.accepted == ["CANCEL", "PAY"]
    assert caught.value.metadata["accepted_events"] == "CANCEL,PAY"
    history = await h.machines.list_history(i.id)
    assert [(e.kind, e.event, e.event_id) for e in history] == [
        (EntryKind.CREATED, "create", None),
        (EntryKind.REJECTED, "SHIP", "s1"),
    ]
    # The same id again: the same answer, recorded once.
    with pytest.raises(EventNotAccepted):
        await h.machines.send_event(i.id, "SHIP", {"x": 1}, event_id="s1")
    assert len(await h.machines.list_history(i.id)) == 2
    assert (await h.machines.available_events(i.id))[1] == ["CANCEL", "PAY"]


async def test_same_event_id_applies_once_and_other_payload_is_refused(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 10})
    results = await asyncio.gather(
        *(
            h.machines.send_event(i.id, "PAY", {"amount": 1}, event_id=f"e{n % 3}")
            for n in range(30)
        )
    )
    assert {entry.sequence for _, entry in results} == {2, 3, 4}
    assert (await h.machines.get_instance(i.id)).data["tries"] == 3
    with pytest.raises(AlreadyExists):
        await h.machines.send_event(i.id, "PAY", {"amount": 2}, event_id="e0")


ACTIONS = """
name: steps
mode: state_machine
initial: a
data: {n: 0}
states:
  a:
    exit: [{tool: {name: test.record, args: {label: "exit a n=${{ data.n }}"}}}]
    on:
      GO:
        target: b
        assign: {n: "${{ data.n + 1 }}"}
        actions: [{tool: {name: test.record, args: {label: "go n=${{ data.n }}"}}}]
  b:
    entry: [{tool: {name: test.record, args: {label: "entry b n=${{ data.n }}"}}}]
    on: {DONE: c}
  c: {final: true}
"""


async def test_exit_then_transition_actions_then_assign_then_entry(h) -> None:
    await h.define(ACTIONS)
    i = await h.machines.create_instance("steps")
    rec, entry = await h.machines.send_event(i.id, "GO")
    assert h.recorder.calls == ["exit a n=0", "go n=0", "entry b n=1"]
    assert [(a["phase"], a["ok"]) for a in entry.actions] == [
        ("exit", True),
        ("transition", True),
        ("entry", True),
    ]
    assert entry.actions[2]["output"] == {"label": "entry b n=1", "attempt": 1}
    assert rec.data == {"n": 1}


FAILING = """
name: fragile
mode: state_machine
initial: idle
states:
  idle:
    on:
      CHARGE:
        target: charged
        actions:
          - tool: {name: test.record, args: {label: charge, fail_until: "${{ event.data.ok_on }}"}}
            retry: {max_attempts: 3, initial_interval: 1ms}
    on_error: {target: broken, assign: {why: "${{ event.data.type }}"}}
  charged: {final: true}
  broken: {final: true}
"""


async def test_action_retries_then_succeeds(h) -> None:
    await h.define(FAILING)
    i = await h.machines.create_instance("fragile")
    rec, entry = await h.machines.send_event(i.id, "CHARGE", {"ok_on": 3})
    assert rec.current == "charged" and entry.actions[0]["attempts"] == 3
    assert h.recorder.calls == ["charge"] * 3


async def test_an_irreversible_action_is_called_once_whatever_its_retry(h) -> None:
    """Issue 14: one retry decision, with the irreversible guard, wherever a tool is called."""
    calls: list[int] = []

    class Launch(Tool):
        name = "test.launch"
        effect = Effect.IRREVERSIBLE

        async def call(self, args: Any, ctx: CallContext) -> Any:
            calls.append(ctx.attempt)
            raise ToolFailure("tool_error", "launch failed")

    h.engine.tools.register(Launch())
    await h.define(
        FAILING.replace("name: fragile", "name: launcher").replace(
            'tool: {name: test.record, args: {label: charge, fail_until: "${{ event.data.ok_on }}"}}',
            "tool: {name: test.launch}",
        )
    )
    i = await h.machines.create_instance("launcher")
    rec, entry = await h.machines.send_event(i.id, "CHARGE", {"ok_on": 2})
    assert calls == [1]
    assert entry.kind is EntryKind.ABORTED and entry.actions[0]["attempts"] == 1
    assert rec.current == "broken"


async def test_action_failure_after_retries_takes_on_error(h) -> None:
    await h.define(FAILING)
    i = await h.machines.create_instance("fragile")
    rec, entry = await h.machines.send_event(i.id, "CHARGE", {"ok_on": 9})
    assert entry.kind is EntryKind.ABORTED and entry.error["type"] == "tool_error"
    assert rec.current == "broken" and rec.state is InstanceState.COMPLETED
    assert rec.data == {"why": "tool_error"}
    history = await h.machines.list_history(i.id)
    assert [(e.kind, e.event, e.to_state) for e in history[1:]] == [
        (EntryKind.ABORTED, "CHARGE", "idle"),
        (EntryKind.TRANSITION, "action:error", "broken"),
    ]


async def test_action_failure_without_on_error_fails_the_instance(h) -> None:
    await h.define(
        FAILING.replace(
            '    on_error: {target: broken, assign: {why: "${{ event.data.type }}"}}\n', ""
        ).replace("  broken: {final: true}\n", "")
    )
    i = await h.machines.create_instance("fragile")
    rec, entry = await h.machines.send_event(i.id, "CHARGE", {"ok_on": 9})
    assert rec.state is InstanceState.FAILED and rec.current == "idle"
    assert rec.error["type"] == "tool_error" and rec.error["state"] == "idle"
    assert entry.instance_state is InstanceState.FAILED
    final = await h.machines.wait_final(i.id, timeout=30)
    assert final.state is InstanceState.FAILED


async def test_a_guard_that_cannot_be_evaluated_refuses_the_event(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 10})
    with pytest.raises(GuardFailed):
        await h.machines.send_event(i.id, "PAY", {"nope": 1})
    rec = await h.machines.get_instance(i.id)
    assert rec.state is InstanceState.ACTIVE and rec.current == "pending"
    # tests/machines/test_guard_errors.py has the details.


TIMERS = """
name: timers
mode: state_machine
initial: waiting
data: {pings: 0}
states:
  waiting:
    on:
      PING: {target: waiting, assign: {pings: "${{ data.pings + 1 }}"}}
      POKE: {target: waiting, reenter: true}
      LEAVE: elsewhere
    after: {300ms: expired}
  elsewhere: {on: {BACK: waiting}}
  expired: {final: true}
"""


async def test_timer_fires_and_is_recorded(h) -> None:
    await h.define(TIMERS)
    i = await h.machines.create_instance("timers")
    final = await h.machines.wait_final(i.id, timeout=30)
    assert final.current == "expired"
    last = (await h.machines.list_history(i.id))[-1]
    assert (last.event, last.kind, last.from_state) == (
        "after:300ms",
        EntryKind.TRANSITION,
        "waiting",
    )


async def test_leaving_a_state_cancels_its_timers(h) -> None:
    # A 1 s timer: LEAVE, sent right after the create, comes first on a loaded machine too.
    await h.define(TIMERS.replace("300ms", "1s"))
    i = await h.machines.create_instance("timers")
    await h.machines.send_event(i.id, "LEAVE")
    await asyncio.sleep(1.2)  # past the time the timer was due
    assert (await h.machines.get_instance(i.id)).current == "elsewhere"
    assert await h.machines.store.list_timers() == []


async def test_self_transition_keeps_timers_and_reenter_restarts_them(h) -> None:
    async def timers_of(instance_id: str) -> list:
        return [t for t in await h.machines.store.list_timers() if t.instance_id == instance_id]

    # 2 s timers: PING and POKE reach the instance before its timer on a loaded machine too
    # (with 300 ms the timer had fired and the instance ended before PING came).
    await h.define(TIMERS.replace("300ms", "2s"))
    i = await h.machines.create_instance("timers")
    [armed] = await timers_of(i.id)
    rec, entry = await h.machines.send_event(i.id, "PING")  # not reentered: the timer keeps running
    assert not entry.reentered and rec.entry_sequence == 1
    assert await timers_of(i.id) == [armed]  # the same timer, due when it was
    final = await h.machines.wait_final(i.id, timeout=30)
    assert final.current == "expired" and final.data == {"pings": 1}

    j = await h.machines.create_instance("timers")
    [first] = await timers_of(j.id)
    rec, entry = await h.machines.send_event(j.id, "POKE")  # reentered: a new timer from now
    assert entry.reentered and rec.entry_sequence == entry.sequence
    [again] = await timers_of(j.id)
    assert again.key != first.key and again.key.startswith(f"{entry.sequence}:")
    assert again.fire_at > first.fire_at
    final = await h.machines.wait_final(j.id, timeout=30)
    assert final.current == "expired"


FULFIL_OK = """
name: fulfil
nodes:
  - {id: pick, pass: {value: "${{ input.order }}"}}
  - {id: pack, needs: [pick], pass: {value: {parcel: "${{ nodes.pick.output }}"}}}
output: "${{ nodes.pack.output }}"
"""
FULFIL_FAILING = """
name: fulfil
nodes:
  - {id: pick, tool: {name: core.fail, args: {type: out_of_stock, message: gone}}}
"""
HYBRID = """
name: shop
mode: state_machine
initial: paid
states:
  paid:
    invoke: {workflow: fulfil, input: {order: "${{ input.id }}"}}
    on_done: {target: shipped, assign: {parcel: "${{ event.data.parcel }}"}}
    on_error: {target: failed, assign: {error: "${{ event.data.type }}"}}
    on: {CANCEL: cancelled}
  shipped: {final: true}
  failed: {final: true}
  cancelled: {final: true}
"""


async def test_invoke_done_moves_on_with_the_output(h) -> None:
    await h.define(FULFIL_OK, HYBRID)
    i = await h.machines.create_instance("shop", {"id": "o-1"})
    assert i.invoke_execution == f"{i.id}.invoke.1"
    final = await h.machines.wait_final(i.id, timeout=10)
    assert (final.current, final.data) == ("shipped", {"parcel": "o-1"})
    child = await h.engine.get_execution(i.invoke_execution)
    assert child.parent_id == i.id and child.state.value == "SUCCEEDED"


async def test_invoke_error_takes_on_error(h) -> None:
    await h.define(FULFIL_FAILING, HYBRID)
    i = await h.machines.create_instance("shop", {"id": "o-2"})
    final = await h.machines.wait_final(i.id, timeout=10)
    assert (final.current, final.data) == ("failed", {"error": "out_of_stock"})
    last = (await h.machines.list_history(i.id))[-1]
    assert last.event == "invoke:error" and last.event_data["execution"] == i.invoke_execution


async def test_leaving_an_invoking_state_cancels_the_child(h) -> None:
    slow = "name: fulfil\nnodes:\n  - {id: wait, tool: {name: core.sleep, args: {seconds: 30}}}\n"
    await h.define(slow, HYBRID)
    i = await h.machines.create_instance("shop", {"id": "o-3"})
    rec, _ = await h.machines.send_event(i.id, "CANCEL")
    assert rec.current == "cancelled" and rec.invoke_execution is None
    await until(lambda: _terminal(h, i.invoke_execution))
    child = await h.engine.get_execution(i.invoke_execution)
    assert child.state.value == "CANCELLED"


async def test_cancel_instance(h) -> None:
    await h.define(TIMERS)
    i = await h.machines.create_instance("timers")
    rec = await h.machines.cancel_instance(i.id)
    assert rec.state is InstanceState.CANCELLED
    assert await h.machines.store.list_timers() == []
    with pytest.raises(IllegalTransition):
        await h.machines.send_event(i.id, "PING")


async def test_request_id_creates_once(h) -> None:
    await h.define(ORDER)
    a = await h.machines.create_instance("order", {"total": 1}, request_id="r1")
    b = await h.machines.create_instance("order", {"total": 1}, request_id="r1")
    assert a.id == b.id
    with pytest.raises(AlreadyExists):
        await h.machines.create_instance("order", {"total": 2}, request_id="r1")


async def test_a_dag_node_can_run_a_state_machine_to_its_final_state(h) -> None:
    await h.define(ORDER)
    task = asyncio.create_task(
        h.machines.run_child(
            parent_id="exec1",
            key="child",
            attempt=1,
            workflow="order",
            version=None,
            input={"total": 5},
            tenant="default",
        )
    )
    instance_id = "exec1.child.1"
    await until(lambda: instance_exists(h.machines, instance_id))
    await h.machines.send_event(instance_id, "PAY", {"amount": 5})
    await h.machines.send_event(instance_id, "SHIP")
    assert await asyncio.wait_for(task, 30) == {"state": "shipped", "data": {"paid": 5, "tries": 0}}


async def test_events_of_one_instance_are_handled_one_at_a_time_in_arrival_order(h) -> None:
    text = """
name: seq
mode: state_machine
initial: s
data: {log: []}
states:
  s:
    on:
      ADD:
        target: s
        actions: [{tool: {name: core.sleep, args: {seconds: 0.001}}}]
        assign: {log: "${{ data.log + [event.data.n] }}"}
"""
    await h.define(text)
    i = await h.machines.create_instance("seq")
    await asyncio.gather(*(h.machines.send_event(i.id, "ADD", {"n": n}) for n in range(20)))
    assert (await h.machines.get_instance(i.id)).data["log"] == list(range(20))


async def test_a_sender_cancelled_during_its_commit_leaves_a_consistent_instance(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 10})
    task = asyncio.create_task(h.machines.send_event(i.id, "PAY", {"amount": 1}, event_id="c1"))
    await asyncio.sleep(0)
    task.cancel()  # in memory the event is already done; on SQLite it waits for its commit
    try:
        await task
    except asyncio.CancelledError:
        pass
    # Applied or not, never half: the next event follows whatever is stored, and a retry of
    # the cancelled one with its id is applied at most once.
    await h.machines.send_event(i.id, "PAY", {"amount": 1}, event_id="c1")
    _, entry = await h.machines.send_event(i.id, "PAY", {"amount": 1}, event_id="c2")
    history = await h.machines.list_history(i.id)
    assert [e.sequence for e in history] == [1, 2, 3] and entry.sequence == 3
    assert [e.event_id for e in history[1:]] == ["c1", "c2"]
    assert (await h.machines.get_instance(i.id)).data["tries"] == 2


ENTRY_FAILS = """
name: entryfail
mode: state_machine
initial: a
states:
  a: {on: {GO: b}}
  b:
    entry: [{tool: {name: test.record, args: {label: "enter b", fail: true}}}]
    exit: [{tool: {name: test.record, args: {label: "exit b"}}}]
    on: {X: a}
    on_error: {target: c, actions: [{tool: {name: test.record, args: {label: "recover ${{ event.data.type }}"}}}]}
  c: {final: true}
"""


async def test_an_entry_action_failure_takes_the_entered_states_on_error(h) -> None:
    await h.define(ENTRY_FAILS)
    i = await h.machines.create_instance("entryfail")
    rec, entry = await h.machines.send_event(i.id, "GO")
    assert (
        entry.kind is EntryKind.TRANSITION
        and entry.to_state == "b"
        and entry.error["type"] == "tool_error"
    )
    assert (rec.current, rec.state) == ("c", InstanceState.COMPLETED)
    assert h.recorder.calls == ["enter b", "exit b", "recover tool_error"]
    history = await h.machines.list_history(i.id)
    assert [(e.event, e.from_state, e.to_state) for e in history[1:]] == [
        ("GO", "a", "b"),
        ("action:error", "b", "c"),
    ]


async def test_a_failing_on_error_transition_fails_the_instance(h) -> None:
    await h.define(
        ENTRY_FAILS.replace('label: "recover ${{ event.data.type }}"', "label: recover, fail: true")
    )
    i = await h.machines.create_instance("entryfail")
    rec, _ = await h.machines.send_event(i.id, "GO")
    assert rec.state is InstanceState.FAILED and rec.current == "b"
    last = (await h.machines.list_history(i.id))[-1]
    assert last.kind is EntryKind.ABORTED and last.instance_state is InstanceState.FAILED


async def test_a_failed_invoke_without_on_error_fails_the_instance(h) -> None:
    shop = HYBRID.replace(
        '    on_error: {target: failed, assign: {error: "${{ event.data.type }}"}}\n', ""
    ).replace("  failed: {final: true}\n", "")
    await h.define(FULFIL_FAILING, shop)
    i = await h.machines.create_instance("shop", {"id": "o-4"})
    final = await h.machines.wait_final(i.id, timeout=10)
    assert (final.state, final.current, final.error["type"]) == (
        InstanceState.FAILED,
        "paid",
        "out_of_stock",
    )


async def test_a_timer_whose_guard_fails_is_consumed_without_a_transition(h) -> None:
    await h.define("""
name: guarded
mode: state_machine
initial: w
data: {armed: false}
states:
  w:
    on: {ARM: {target: w, assign: {armed: true}}}
    after: {100ms: {target: done, guard: "${{ data.armed }}"}}
  done: {final: true}
""")
    i = await h.machines.create_instance("guarded")
    await until(lambda: history_longer_than(h, i.id, 1))  # the timer fired
    history = await h.machines.list_history(i.id)
    assert [(e.event, e.kind) for e in history[1:]] == [("after:100ms", EntryKind.NO_TRANSITION)]
    assert await h.machines.store.list_timers() == []
    assert (await h.machines.get_instance(i.id)).current == "w"


async def test_an_ended_instance_leaves_memory_and_still_answers_duplicates(h) -> None:
    await h.define(ORDER)
    i = await h.machines.create_instance("order", {"total": 1})
    await h.machines.send_event(i.id, "PAY", {"amount": 1}, event_id="p")
    _, shipped = await h.machines.send_event(i.id, "SHIP", event_id="s")
    assert i.id not in h.machines.instances
    rec, again = await h.machines.send_event(i.id, "SHIP", event_id="s")
    assert again.sequence == shipped.sequence and rec.state is InstanceState.COMPLETED
    with pytest.raises(IllegalTransition):
        await h.machines.send_event(i.id, "SHIP", event_id="other")


async def test_a_failed_commit_leaves_the_stored_truth() -> None:
    """A commit that fails is reported to the sender; the instance is reloaded from the store
    and the next event follows what is stored."""
    from agentrun.storage.base import StoreError
    from agentrun.storage.machines import MemoryMachineStore
    from agentrun.storage.memory import MemoryStore
    from tests.machines.conftest import Harness, Recorder

    class Flaky(MemoryMachineStore):
        fail = 0

        async def commit(self, batch):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail -= 1
                raise StoreError("disk on fire")
            await MemoryMachineStore.commit(self, batch)

    from agentrun.engine import Engine
    from agentrun.engine.machine import MachineEngine
    from agentrun.integrations import Registry, default_agents
    from agentrun.integrations.core_tools import core_tools

    recorder = Recorder()
    engine = Engine(
        MemoryStore(), tools=Registry([*core_tools(), recorder]), agents=default_agents()
    )
    await engine.start()
    store = Flaky()
    store.write_at_once = None  # type: ignore[assignment,method-assign]  # force the awaited path
    machines = MachineEngine(engine, store)
    await machines.start()
    h = Harness(engine, machines, recorder)
    await h.define(ORDER)
    i = await machines.create_instance("order", {"total": 10})
    store.fail = 1
    with pytest.raises(StoreError):
        await machines.send_event(i.id, "PAY", {"amount": 1}, event_id="x")
    assert (await machines.get_instance(i.id)).data["tries"] == 0
    rec, entry = await machines.send_event(i.id, "PAY", {"amount": 1}, event_id="x")
    assert entry.sequence == 2 and rec.data["tries"] == 1
    await machines.stop()
    await engine.stop(grace=0)


async def test_idle_instances_leave_memory_beyond_the_bound(h) -> None:
    # 2 s timers: ids[0] still waits when it gets its PING, however slowly 12 are created.
    await h.define(TIMERS.replace("300ms", "2s"))
    h.machines.max_instances = 5
    ids = [(await h.machines.create_instance("timers")).id for _ in range(12)]
    assert len(h.machines.instances) <= 5
    # An evicted instance still takes events, and its timer still fires.
    rec, _ = await h.machines.send_event(ids[0], "PING")
    assert rec.data == {"pings": 1}
    final = await h.machines.wait_final(ids[1], timeout=30)
    assert final.current == "expired"


async def _terminal(h, execution_id: str) -> bool:
    return (await h.engine.get_execution(execution_id)).state.terminal
