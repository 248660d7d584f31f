"""Streamed answers end to end: the `openai` provider reading server-sent events from the local
chat-completions server, the engine turning them into `agent.delta` events, a real gRPC server
and the SDK watching them (issue 16 item 1). The chat server holds the answer mid-way on
`asyncio.Event`s, so "before the node completes" is a fact of the test, not a race."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentrun.cli import main
from agentrun.client import AsyncClient, ExecutionEvent, ExecutionState
from agentrun.server import AgentrunServer, ServerConfig
from tests.server.conftest import STOP_GRACE

from .chatserver import ChatServer
from .conftest import make_engine

pytestmark = pytest.mark.timeout(120)

CONTENT = "The quick brown fox jumps over the lazy dog; " * 4  # 45 pieces of 4 characters
STREAMED = """
name: streamed
nodes:
  - id: ask
    agent: {model: openai/gpt-test, prompt: "Tell me", stream: true}
"""


@contextlib.asynccontextmanager
async def served(config: dict[str, Any]) -> AsyncIterator[tuple[Any, AsyncClient, str]]:
    engine = await make_engine(config)
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    port = await server.start("127.0.0.1:0")
    try:
        async with AsyncClient(f"127.0.0.1:{port}", api_key="") as client:
            yield engine, client, f"127.0.0.1:{port}"
    finally:
        await server.stop(STOP_GRACE)
        await engine.stop(grace=0)


def openai(chat: ChatServer, **extra: Any) -> dict[str, Any]:
    return {"openai": {"base_url": chat.base_url, **extra}}


def text_of(events: list[ExecutionEvent]) -> str:
    return "".join(e.delta.text for e in events if e.delta)


async def until(condition: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_a_watcher_sees_the_answer_grow_and_a_reconnect_misses_nothing() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    async with ChatServer([{"content": CONTENT}], holds={5: first, 20: second}) as chat:
        # The provider does not stream by default here: the node's `stream: true` decides.
        async with served(openai(chat, stream=False)) as (engine, client, _):
            await client.create_workflow(source=STREAMED)
            execution = await client.start_execution("streamed", {})
            seen: list[ExecutionEvent] = []
            async with contextlib.aclosing(client.watch(execution, timeout=60)) as events:
                async for event in events:
                    seen.append(event)
                    if text_of(seen) == CONTENT[:20]:
                        break
            # Mid-answer: the model server holds piece 5, the node has not completed.
            assert chat.pieces_sent == 5
            assert not any(
                e.type.startswith("node.") and e.type != "node.running" and e.node_id == "ask"
                for e in seen
                if e.type != "node.ready"
            )
            assert (await client.get_execution(execution)).state is ExecutionState.RUNNING
            last = seen[-1].sequence

            # Disconnected: the answer goes on and is stored meanwhile.
            first.set()

            async def stored_up_to_piece_20() -> bool:
                events = await engine.list_events(execution.id, limit=10_000)
                return (
                    "".join(e.data["text"] for e in events if e.type == "agent.delta")
                    == CONTENT[:80]
                )

            await until(stored_up_to_piece_20)
            second.set()
            async for event in client.watch(execution, after_sequence=last, timeout=60):
                seen.append(event)

            deltas = [e.delta for e in seen if e.delta]
            assert [d.index for d in deltas] == list(range(len(deltas)))  # none missed, none twice
            assert {(d.node_id, d.attempt, d.turn) for d in deltas} == {("ask", 1, 1)}
            assert text_of(seen) == CONTENT
            sequences = [e.sequence for e in seen]
            assert sequences == sorted(set(sequences))
            assert seen[-1].type == "execution.succeeded"
            final = await client.get_execution(execution)
            assert final.output == {"ask": {"text": CONTENT}}  # the output is stored as before
            assert chat.bodies[0]["stream"] is True


def sse(*pieces: str, error: str | None = None) -> bytes:
    def chunk(data: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(data)}\n\n".encode()

    out = b"".join(
        chunk({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
        for p in pieces
    )
    if error:
        out += chunk({"error": {"message": error}})
    return out


async def test_the_deltas_of_a_failed_attempt_are_marked_and_the_retry_streams_anew() -> None:
    script = [
        {"raw": sse("I think ", "the answer ", "is", error="overloaded")},
        {"content": "Forty-two."},
    ]
    flaky = STREAMED.replace(
        "stream: true}", "stream: true}\n    retry: {max_attempts: 2, initial_interval: 10ms}"
    )
    async with ChatServer(script) as chat, served(openai(chat)) as (_engine, client, _):
        await client.create_workflow(source=flaky)
        execution = await client.start_execution("streamed", {})
        events = [e async for e in client.watch(execution, timeout=60)]
        assert events[-1].type == "execution.succeeded"
        first = [e for e in events if e.delta and e.delta.attempt == 1]
        [void] = [e for e in events if e.type == "agent.deltas_discarded"]
        second = [e for e in events if e.delta and e.delta.attempt == 2]
        assert first and void.data == {"attempt": 1, "deltas": len(first)} and void.node_id == "ask"
        assert "I think ".startswith(text_of(first)) or text_of(first).startswith("I think ")
        retrying = next(e for e in events if e.type == "node.retrying")
        assert first[-1].sequence < void.sequence < retrying.sequence < second[0].sequence
        assert [e.delta.index for e in second] == list(range(len(second)))
        assert text_of(second) == "Forty-two."
        assert (await client.get_execution(execution)).output == {"ask": {"text": "Forty-two."}}


async def test_stream_false_on_the_node_wins_over_the_provider() -> None:
    quiet = STREAMED.replace("stream: true", "stream: false")
    async with (
        ChatServer([{"content": "No stream."}]) as chat,
        served(openai(chat, stream=True)) as (_engine, client, _),
    ):
        await client.create_workflow(source=quiet)
        execution = await client.start_execution("streamed", {})
        events = [e async for e in client.watch(execution, timeout=60)]
        assert events[-1].type == "execution.succeeded"
        assert [e for e in events if e.type.startswith("agent.delta")] == []
        assert "stream" not in chat.bodies[0]


async def test_the_mock_provider_streams_when_the_node_asks() -> None:
    echo = """
name: echo
nodes:
  - {id: say, agent: {model: mock/echo, prompt: "one two  three ", stream: true}}
  - {id: plain, agent: {model: mock/echo, prompt: "not streamed"}}
"""
    async with served({}) as (_engine, client, _):
        await client.create_workflow(source=echo)
        execution = await client.start_execution("echo", {})
        events = [e async for e in client.watch(execution, timeout=60)]
        assert text_of(events) == "one two  three "
        assert {e.node_id for e in events if e.delta} == {"say"}


async def test_agentrun_watch_prints_tokens_as_they_come() -> None:
    hold = asyncio.Event()
    async with (
        ChatServer([{"content": CONTENT}], holds={5: hold}) as chat,
        served(openai(chat)) as (_, client, address),
    ):
        await client.create_workflow(source=STREAMED)
        execution = await client.start_execution("streamed", {})
        out = io.StringIO()
        codes: list[int] = []

        def watch() -> None:
            codes.append(main(["watch", execution.id, "--server", address]))

        with contextlib.redirect_stdout(out):
            thread = threading.Thread(target=watch, daemon=True)
            thread.start()

            async def printed_so_far() -> bool:
                return f"agent.delta ask: {CONTENT[:20]}" in out.getvalue()

            await until(printed_so_far)
            assert chat.pieces_sent == 5  # printed while the model is still answering
            hold.set()
            await asyncio.to_thread(thread.join, 60)
        assert codes == [0]
        lines = out.getvalue().splitlines()
        [line] = [x for x in lines if " agent.delta " in x]
        assert line.endswith(
            (f"agent.delta ask: {CONTENT.rstrip()}", f"agent.delta ask: {CONTENT}")
        )
        print(out.getvalue())
        assert lines[lines.index(line) + 1].split()[2] == "agent.usage"  # the answer's line ended
