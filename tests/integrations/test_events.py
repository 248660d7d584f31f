"""Event buses: the publisher over the in-memory bus, NATS JetStream (the shared server, and a
private one killed mid-run), and Kafka when AGENTRUN_KAFKA_BOOTSTRAP is set."""

from __future__ import annotations

import asyncio
import os
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
from collections import Counter
from typing import Any

import pytest

from agentrun.integrations.events import BusEvent, BusPublisher, MemoryBus, publisher_from_config
from agentrun.storage.records import ExecutionState

FLOW = """
name: steps
nodes:
  - {id: a, tool: {name: core.sleep, args: {seconds: 0.05}}}
  - {id: b, needs: [a], tool: {name: core.sleep, args: {seconds: 0.05}}}
  - id: m
    needs: [b]
    map: {items: "${{ [1, 2, 3] }}", node: {tool: {name: core.sleep, args: {seconds: 0.05}}}}
  - {id: c, needs: [m], tool: {name: core.echo, args: {done: true}}}
"""

SLOW = """
name: slow
nodes:
""" + "".join(
    f"  - {{id: s{i}, {'needs: [s' + str(i - 1) + '], ' if i else ''}tool: {{name: core.sleep, args: {{seconds: 0.2}}}}}}\n"
    for i in range(8)
)


def check_complete(events: list[BusEvent], executions: dict[str, int]) -> None:
    """Every execution's events 1..last exactly once, in order per execution."""
    by_exec: dict[str, list[int]] = {}
    for e in events:
        by_exec.setdefault(e.execution_id, []).append(e.sequence)
    for eid, last in executions.items():
        got = by_exec.get(eid, [])
        assert sorted(got) == list(range(1, last + 1)), (eid, last, got)
        assert got == sorted(got), f"{eid}: out of order"


async def until(predicate: Any, timeout: float = 30.0) -> None:
    """Waits for a condition (a generous bound: the machine may be loaded)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def start_all(runner: Any, text: str, n: int) -> list[str]:
    from agentrun.engine import load_workflow

    spec = load_workflow(text)
    await runner.engine.create_workflow(spec)
    return [(await runner.engine.start_execution(spec.name, {})).id for _ in range(n)]


async def finish_all(runner: Any, ids: list[str], timeout: float = 15) -> dict[str, int]:
    finals = await asyncio.gather(*(runner.engine.wait(i, timeout=timeout) for i in ids))
    assert all(f.state is ExecutionState.SUCCEEDED for f in finals), [f.error for f in finals]
    return {f.id: f.last_sequence for f in finals}


# ------------------------------------------------------------------ in memory
async def test_memory_bus_gets_every_event_in_order(runner_factory) -> None:
    runner = await runner_factory()
    publisher = publisher_from_config(runner.engine, {"events": {"bus": "memory"}})
    await publisher.start()
    ids = await start_all(runner, FLOW, 3)
    lasts = await finish_all(runner, ids)
    await publisher.drained()
    check_complete(publisher.bus.events, lasts)
    first = publisher.bus.for_execution(ids[0])[0]
    assert first.id == f"{ids[0]}:1" and first.tenant == "default" and first.workflow == "steps"
    await publisher.stop()


async def test_outage_never_blocks_executions_and_is_caught_up(runner_factory) -> None:
    runner = await runner_factory()
    bus = MemoryBus()
    publisher = BusPublisher(
        runner.engine.store, bus, retry_interval=0.05, max_retry_interval=0.1
    ).attach(runner.engine.hub)
    await publisher.start()
    ids = await start_all(runner, FLOW, 4)
    await asyncio.sleep(0.03)
    bus.available = False
    lasts = await finish_all(runner, ids)  # finish while the bus is down
    assert publisher._down and not publisher.idle
    seen = len(bus.events)
    assert seen < sum(lasts.values())
    bus.available = True
    await publisher.drained()
    check_complete(bus.events, lasts)
    await publisher.stop()


async def test_full_queue_catches_up_from_the_store(runner_factory) -> None:
    runner = await runner_factory()
    bus = MemoryBus()
    publisher = BusPublisher(runner.engine.store, bus, queue_size=3).attach(runner.engine.hub)
    # Not started yet: every commit lands in (and overflows) the queue.
    ids = await start_all(runner, FLOW, 3)
    lasts = await finish_all(runner, ids)
    assert publisher.dropped > 0
    await publisher.start()
    await publisher.drained()
    check_complete(bus.events, lasts)
    await publisher.stop()


async def test_restart_resumes_from_the_bus_cursor(runner_factory) -> None:
    """A new publisher (a restarted process) asks the bus where an execution stands."""
    runner = await runner_factory()
    bus = MemoryBus()
    first = BusPublisher(runner.engine.store, bus).attach(runner.engine.hub)
    await first.start()
    ids = await start_all(runner, SLOW, 1)
    await until(lambda: len(bus.events) > 0)
    await first.stop()  # the old process is gone: its queue is never drained again
    published = len(bus.events)
    second = BusPublisher(runner.engine.store, bus).attach(runner.engine.hub)
    await second.start()
    lasts = await finish_all(runner, ids)
    await second.drained()
    check_complete(bus.events, lasts)
    assert 0 < published < lasts[ids[0]]
    await second.stop()


# ------------------------------------------------------------------ NATS
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


async def nats_reachable(url: str) -> bool:
    import nats

    try:
        nc = await nats.connect(
            url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False
        )
    except Exception:
        return False
    await nc.close()
    return True


async def read_stream(url: str, stream: str) -> list[BusEvent]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            event = BusEvent.from_json(msg.data)
            assert msg.headers["Nats-Msg-Id"] == event.id
            assert msg.subject.endswith(f".{event.workflow}.{event.execution_id}")
            out.append(event)
        return out
    finally:
        await nc.close()


async def test_nats_shared_server_publishes_with_dedup(runner_factory) -> None:
    url = "nats://127.0.0.1:4222"
    if not await nats_reachable(url):
        pytest.skip("NATS is not running on 127.0.0.1:4222")
    tag = _secrets.token_hex(4)
    stream, prefix = f"TEST_{tag}", f"test{tag}.events"
    config = {
        "events": {"bus": "nats", "nats": {"url": url, "stream": stream, "subject_prefix": prefix}}
    }
    runner = await runner_factory()
    publisher = publisher_from_config(runner.engine, config)
    await publisher.start()
    try:
        ids = await start_all(runner, FLOW, 2)
        lasts = await finish_all(runner, ids)
        await publisher.drained()
        events = await read_stream(url, stream)
        check_complete(events, lasts)
        assert len(events) == sum(lasts.values())
        # Publishing the same events again (a restart replaying) adds nothing.
        for event in list(events):
            await publisher.bus.publish(event)
        assert len(await read_stream(url, stream)) == len(events)
        assert await publisher.bus.last_sequence("default", "steps", ids[0]) == lasts[ids[0]]
    finally:
        await publisher.stop()
        import nats

        nc = await nats.connect(url)
        await nc.jetstream().delete_stream(stream)
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateNats:
    def __init__(self, store_dir: str) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if await nats_reachable(self.url):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("private nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


@pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server not installed")
async def test_nats_killed_mid_run_then_caught_up(runner_factory, tmp_path) -> None:
    server = PrivateNats(str(tmp_path / "js"))
    await server.start()
    runner = await runner_factory()
    config = {
        "events": {
            "bus": "nats",
            "retry_interval": 0.1,
            "max_retry_interval": 0.3,
            "nats": {"url": server.url, "publish_timeout": 0.5},
        }
    }
    publisher = publisher_from_config(runner.engine, config)
    await publisher.start()
    try:
        ids = await start_all(runner, SLOW, 5)
        await until(lambda: publisher.published > 0)
        server.kill()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        lasts = await finish_all(runner, ids)  # 8 x 0.2 s each: not held up by the outage
        # Executions that waited on the dead bus would spend its 0.5 s publish timeout on each
        # of their ~25 events (>= 12 s); a loaded machine stays well below that.
        assert loop.time() - t0 < 8.0
        assert publisher._down, "the publisher noticed the outage"
        await asyncio.sleep(0.3)
        await server.start()  # same port, same store directory
        await publisher.drained(timeout=20)
        events = await read_stream(server.url, "AGENTRUN_EVENTS")
        check_complete(events, lasts)
        counts = Counter(e.id for e in events)
        print(
            f"NATS outage: {len(events)} events for {len(ids)} executions, "
            f"{sum(c - 1 for c in counts.values())} duplicates on the stream"
        )
        assert len(events) == sum(lasts.values())
    finally:
        await publisher.stop()
        server.kill()


# ------------------------------------------------------------------ Kafka
@pytest.mark.skipif(
    not os.environ.get("AGENTRUN_KAFKA_BOOTSTRAP"),
    reason="no Kafka broker: set AGENTRUN_KAFKA_BOOTSTRAP",
)
async def test_kafka_publishes_every_event(runner_factory) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = f"agentrun-test-{_secrets.token_hex(4)}"
    bootstrap = os.environ["AGENTRUN_KAFKA_BOOTSTRAP"]
    runner = await runner_factory()
    publisher = publisher_from_config(
        runner.engine,
        {"events": {"bus": "kafka", "kafka": {"bootstrap": bootstrap, "topic": topic}}},
    )
    await publisher.start()
    ids = await start_all(runner, FLOW, 2)
    lasts = await finish_all(runner, ids)
    await publisher.drained(timeout=30)
    await publisher.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        events: list[BusEvent] = []
        while len(events) < sum(lasts.values()):
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    event = BusEvent.from_json(r.value)
                    assert (
                        dict(r.headers)["event_id"] == event.id.encode()
                        and r.key == event.execution_id.encode()
                    )
                    events.append(event)
        check_complete(events, lasts)
    finally:
        await consumer.stop()


async def test_kafka_unreachable_never_blocks_executions(runner_factory) -> None:
    """With no broker (none runs here), the Kafka bus is down from the start: executions
    run as usual and the publisher keeps their events to catch up."""
    runner = await runner_factory()
    config = {
        "events": {
            "bus": "kafka",
            "retry_interval": 5,
            "kafka": {"bootstrap": f"127.0.0.1:{free_port()}", "publish_timeout": 0.5},
        }
    }
    publisher = publisher_from_config(runner.engine, config)
    await publisher.start()
    ids = await start_all(runner, FLOW, 2)
    await finish_all(runner, ids, timeout=5)
    assert publisher._down and publisher.published == 0
    assert set(publisher._behind) | {eid for eid, _ in publisher._queue} == set(ids)
    await publisher.stop(timeout=1)
