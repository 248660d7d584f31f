"""Leases on state machine instances, two replicas on one PostgreSQL database (issue 14): the
replica holding an instance's lease is the one that drives it; a killed replica's instances
are taken over once their leases expire; a replica whose lease was taken is fenced."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest

from agentrun.client import Client
from agentrun.client.machines import MachinesClient
from agentrun.storage.machines import EntryKind
from tests.machines.conftest import Recorder, close, make, open_backend, pg_url, until
from tests.machines.test_kill_restart import start_driver

pytestmark = pytest.mark.timeout(120)

LEASE = 1.5  # seconds: short, so that a dead replica's leases expire soon

TIMED = """
name: {name}
mode: state_machine
initial: waiting
states:
  waiting:
    on: {{PING: waiting}}
    after:
      {delay}:
        target: done
        actions: [{{tool: {{name: {tool}, args: {{label: fired}}}}}}]
  done: {{final: true}}
"""


async def _pair(
    tmp_path: Any, a_lease: float = LEASE, **b_options: Any
) -> tuple[Any, Any, Any, Any]:
    store_a = await open_backend("postgresql", tmp_path)
    store_b = await open_backend("postgresql", tmp_path)
    a = await make(store_a, replica="a", lease_seconds=a_lease)
    b = await make(store_b, replica="b", lease_seconds=LEASE, **b_options)
    return a, b, store_a, store_b


async def _close(*parts: Any) -> None:
    for h in parts[:2]:
        await close(h)
    for store in parts[2:]:
        await store.close()


async def test_only_the_replica_holding_the_lease_drives_the_instance(tmp_path: Any) -> None:
    store_a = await open_backend("postgresql", tmp_path)
    a = await make(store_a, replica="a", lease_seconds=LEASE)
    name = f"timed-{uuid.uuid4().hex[:8]}"
    await a.define(TIMED.format(name=name, delay="1s", tool="test.record"))
    inst = await a.machines.create_instance(name)
    # `b` starts after the instance exists and claims often: `a` is alive and renews its
    # lease, so `b` arms nothing and fires nothing.
    store_b = await open_backend("postgresql", tmp_path)
    b = await make(store_b, replica="b", lease_seconds=LEASE, sweep_interval=0.1)
    try:
        final = await a.machines.wait_final(inst.id, timeout=30)
        assert final.current == "done"
        assert a.recorder.calls == ["fired"] and b.recorder.calls == []
        stored = await b.machines.store.get_instance(inst.id)
        assert (stored.owner, stored.lease_epoch) == ("a", 1)
    finally:
        await _close(a, b, store_a, store_b)


async def test_a_killed_replicas_instance_is_taken_over(tmp_path: Any) -> None:
    """`a` is a real process, killed with -9 while its instance waits for a timer; `b`
    claims the instance once `a`'s lease expired and fires the timer."""
    ledger = tmp_path / "a.ledger"
    proc, port = start_driver(
        pg_url(), ledger, env={"DRIVER_REPLICA": "a", "DRIVER_LEASE": str(LEASE)}
    )
    store_b = await open_backend("postgresql", tmp_path)
    flaky = Recorder()
    flaky.name = "test.flaky"
    b = await make(store_b, flaky, replica="b", lease_seconds=LEASE, sweep_interval=0.2)
    try:
        name = f"timed-{uuid.uuid4().hex[:8]}"
        with Client(f"127.0.0.1:{port}", api_key="") as client:
            client.create_workflow(source=TIMED.format(name=name, delay="3s", tool="test.flaky"))
            inst = MachinesClient(client).create_instance(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        final = await b.machines.wait_final(inst.id, timeout=60)
        assert final.current == "done"
        assert flaky.calls == ["fired"] and not ledger.exists()  # `b` fired it, `a` never
        stored = await b.machines.store.get_instance(inst.id)
        assert (stored.owner, stored.lease_epoch) == ("b", 2)
        history = await b.machines.list_history(inst.id)
        assert [(e.kind, e.event) for e in history] == [
            (EntryKind.CREATED, "create"),
            (EntryKind.TRANSITION, "after:3s"),
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
        await close(b)
        await store_b.close()


async def test_a_replica_whose_lease_was_taken_is_fenced_and_lets_go(tmp_path: Any) -> None:
    # `a` renews every 10 s: its renewal must not notice the taken lease before its own
    # commit does (with LEASE it renewed every 0.5 s, and on a busy machine it sometimes let
    # go before the test looked).
    a, b, store_a, store_b = await _pair(tmp_path, a_lease=30.0)
    try:
        name = f"timed-{uuid.uuid4().hex[:8]}"
        await a.define(TIMED.format(name=name, delay="1h", tool="test.record"))
        inst = await a.machines.create_instance(name)
        # An event sent to `b` takes the lease (epoch 2) from `a`.
        await b.machines.send_event(inst.id, "PING", event_id="b1")
        assert (await b.machines.store.get_instance(inst.id)).lease_epoch == 2
        # `a` still holds its copy with epoch 1: its commit is refused, it lets the instance
        # go, takes the lease back (epoch 3) and handles the event on what is stored.
        assert inst.id in a.machines.leases.held_ids()
        _, entry = await a.machines.send_event(inst.id, "PING", event_id="a1")
        assert entry.sequence == 3
        stored = await a.machines.store.get_instance(inst.id)
        assert (stored.owner, stored.lease_epoch) == ("a", 3)
        # `b`'s next renewal finds the lease gone: it stops driving the instance (its timer
        # disarmed).
        await until(lambda: inst.id not in b.machines.leases.held_ids())
        assert inst.id in a.machines.leases.held_ids()
        history = await a.machines.list_history(inst.id)
        assert [(e.sequence, e.event_id) for e in history] == [(1, None), (2, "b1"), (3, "a1")]
    finally:
        await _close(a, b, store_a, store_b)
