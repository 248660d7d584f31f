"""WatchExecution under cuts: a 500-event execution watched through a TCP proxy that drops
every connection 50 times at random points; the SDK resumes after the last sequence it saw
and must see every event exactly once, in order. Plus client-side cancels, and draining."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import grpc
import pytest

from agentrun.client import AsyncClient, ExecutionState
from agentrun.server import AgentrunServer
from agentrun.v1 import execution_service_pb2 as es
from agentrun.v1 import execution_service_pb2_grpc as es_grpc

pytestmark = pytest.mark.timeout(120)

# 247 items -> 2 events each + 6 = 500 events; 10 ms per item keeps it running ~3 s.
MAP = """
name: fanout
nodes:
  - id: fan
    map:
      items: ${{ input.items }}
      max_concurrency: 1
      node:
        tool: {name: core.sleep, args: {seconds: 0.01}}
"""
ITEMS = 247
EVENTS = 500


class CuttingProxy:
    """Forwards TCP to the server; `cut()` drops every open connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            for w in (writer, up_writer):
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> int:
        cut = 0
        for w in list(self.writers):
            transport = w.transport
            if not transport.is_closing():
                transport.abort()
                cut += 1
        return cut

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_fifty_cuts_during_a_500_event_execution(server: AgentrunServer) -> None:
    proxy = CuttingProxy(server.port)
    await proxy.start()
    rng = random.Random(1234)
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{proxy.port}",
        options=[
            ("grpc.initial_reconnect_backoff_ms", 20),
            ("grpc.min_reconnect_backoff_ms", 20),
            ("grpc.max_reconnect_backoff_ms", 100),
        ],
    )
    try:
        async with AsyncClient(channel=channel, watch_reconnects=1000) as client:
            async with AsyncClient(f"127.0.0.1:{server.port}") as direct:
                await direct.create_workflow(source=MAP)
                execution = await direct.start_execution("fanout", {"items": list(range(ITEMS))})
            # 50 random points of the stream; at each, every connection is dropped (the
            # server may have more events in flight: they are lost with the connection).
            cut_after = set(rng.sample(range(1, EVENTS - 100), 50))
            seen: list[int] = []
            cuts = pending = live = 0
            async for event in client.watch(execution):
                seen.append(event.sequence)
                if event.sequence in cut_after:
                    pending += 1
                # Events the client had buffered arrive after a cut, on no connection: a cut
                # point that falls there moves to the next event that came over a live one.
                if pending and proxy.cut() > 0:
                    pending -= 1
                    cuts += 1
                    if await direct_state(server, execution) == "RUNNING":
                        live += 1
            assert cuts == 50
            assert live >= 25, f"only {live} cuts happened while the execution ran"
            assert seen == list(range(1, EVENTS + 1))
            async with AsyncClient(f"127.0.0.1:{server.port}") as direct:
                done = await direct.get_execution(execution)
            assert done.state is ExecutionState.SUCCEEDED
    finally:
        await proxy.stop()


async def direct_state(server: AgentrunServer, execution: object) -> str:
    async with AsyncClient(f"127.0.0.1:{server.port}") as direct:
        return (await direct.get_execution(execution)).state.value


async def test_client_side_cancels_resume_exactly_once(server: AgentrunServer) -> None:
    """Raw stub: read a random number of events, cancel the call, reconnect after the last."""
    rng = random.Random(99)
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        await client.create_workflow(source=MAP)
        execution = await client.start_execution("fanout", {"items": list(range(ITEMS))})
        stub = es_grpc.ExecutionServiceStub(client.channel)
        seen: list[int] = []
        cuts = 0
        while not seen or seen[-1] < EVENTS:
            take = rng.randint(1, 25) if cuts < 50 else EVENTS
            call = stub.WatchExecution(
                es.WatchExecutionRequest(
                    name=execution.name, after_sequence=seen[-1] if seen else 0
                )
            )
            n = 0
            async for response in call:
                seen.append(response.event.sequence)
                n += 1
                if n == take:
                    call.cancel()
                    cuts += 1
                    break
        assert cuts >= 19
        assert seen == list(range(1, EVENTS + 1))


async def test_drain_ends_streams_resumably(engine, server: AgentrunServer) -> None:
    """On drain, a watch ends UNAVAILABLE (SHUTTING_DOWN) with the last sequence sent."""
    async with AsyncClient(f"127.0.0.1:{server.port}", watch_reconnects=0) as client:
        await client.create_workflow(
            source="name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n"
        )
        execution = await client.start_execution("hold", {})
        seen = []
        from agentrun.client import errors

        with pytest.raises(errors.ShuttingDown) as caught:
            async for event in client.watch(execution):
                seen.append(event.sequence)
                if event.type == "node.waiting":
                    await server.drain()
        assert int(caught.value.metadata["last_sequence"]) == seen[-1]


BIG = """
name: big
nodes:
  - id: gate
    wait: {signal: go}
  - id: fan
    needs: [gate]
    map:
      items: ${{ input.items }}
      node:
        pass: {value: "${{ input.pad }}"}
"""


async def test_slow_reader_costs_bounded_memory(
    engine, server: AgentrunServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that stops reading while events pour out: the server's stream waits on flow
    control, the engine's live buffer for it stays bounded (it overflows and then re-reads
    from the store), and the reader still gets every event once, in order."""
    from agentrun.engine.hub import BUFFER, Subscription

    # Every push is seen: an overflow is short-lived when the map commits in a few large
    # turns (the reader goes back to the store and clears it), so polling could miss it.
    pushed: list[tuple[int, bool]] = []
    push = Subscription.push

    def counting_push(self: Subscription, events: Any) -> None:
        push(self, events)
        pushed.append((len(self.buffer), self.overflowed))

    monkeypatch.setattr(Subscription, "push", counting_push)

    items = 1500
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 64 << 20)],
    )
    async with AsyncClient(channel=channel) as client:
        await client.create_workflow(source=BIG)
        execution = await client.start_execution(
            "big", {"items": list(range(items)), "pad": "x" * 8192}
        )
        stub = es_grpc.ExecutionServiceStub(channel)
        call = stub.WatchExecution(es.WatchExecutionRequest(name=execution.name))
        seen: list[int] = []
        while True:
            response = await call.read()
            seen.append(response.event.sequence)
            if response.event.type == "node.waiting":
                break
        await client.signal_execution(execution, "go")  # the map runs; nobody reads
        while not (await client.get_execution(execution)).state.terminal:
            await asyncio.sleep(0.05)
        assert pushed
        assert max(size for size, _ in pushed) <= BUFFER
        assert any(over for _, over in pushed), "the reader never fell behind: proves nothing"
        while (response := await call.read()) is not grpc.aio.EOF:
            seen.append(response.event.sequence)
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) >= 2 * items


async def test_a_client_that_goes_away_releases_its_subscription(
    engine, server: AgentrunServer
) -> None:
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        await client.create_workflow(
            source="name: hold\nnodes:\n  - id: w\n    wait: {signal: go}\n"
        )
        execution = await client.start_execution("hold", {})
        for _ in range(3):
            stub = es_grpc.ExecutionServiceStub(client.channel)
            call = stub.WatchExecution(es.WatchExecutionRequest(name=execution.name))
            async for response in call:
                if response.event.type == "execution.waiting":
                    break
            assert engine.hub._subs.get(execution.id)
            call.cancel()
        for _ in range(1500):  # up to 30 s: a loaded machine is slow to notice the cancel
            if not engine.hub._subs.get(execution.id):
                break
            await asyncio.sleep(0.02)
        assert not engine.hub._subs.get(execution.id)
