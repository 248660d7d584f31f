"""DeltaStream: a provider's raw text pieces become coalesced, numbered `agent.delta` events,
never a piece of a secret, voided when the attempt fails. The clock is fixed, so whether a
piece goes out at once or waits for the timer is decided by the test, not by the machine."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrun.engine.runtime.deltas import DELTA, DISCARDED, DeltaStream

pytestmark = __import__("pytest").mark.timeout(60)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        self.events.append((type_, data))

    @property
    def texts(self) -> list[str]:
        return [d["text"] for t, d in self.events if t == DELTA]


def stream(sink: Sink, **kw: Any) -> DeltaStream:
    kw.setdefault("secrets", {})
    return DeltaStream(sink, attempt=kw.pop("attempt", 2), clock=lambda: 100.0, **kw)


async def until(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_first_piece_goes_at_once_the_rest_after_the_interval() -> None:
    sink = Sink()
    s = stream(sink)
    s.feed("Hel")
    assert sink.texts == ["Hel"]
    s.feed("lo, ")
    s.feed("world")
    assert sink.texts == ["Hel"]  # within the interval: waiting for the timer
    await until(lambda: len(sink.texts) == 2)  # the timer sends it though nothing more comes
    assert sink.texts == ["Hel", "lo, world"]
    assert [d for _, d in sink.events] == [
        {"attempt": 2, "index": 0, "turn": 1, "text": "Hel"},
        {"attempt": 2, "index": 1, "turn": 1, "text": "lo, world"},
    ]
    s.close()
    assert len(sink.events) == 2


async def test_a_kibibyte_waiting_goes_at_once() -> None:
    sink = Sink()
    s = stream(sink)
    s.feed("a")
    s.feed("é" * 500)  # 1000 bytes of UTF-8
    assert sink.texts == ["a"]
    s.feed("x" * 24)  # 1024 bytes waiting
    assert sink.texts == ["a", "é" * 500 + "x" * 24]
    s.close()
    assert [d["index"] for _, d in sink.events] == [0, 1]


async def test_the_start_of_a_secret_is_held_back_until_it_is_known() -> None:
    secret = "sk-SECRET-123456"
    sink = Sink()
    s = stream(sink, secrets={"key": secret})
    s.feed("key: sk-SE")
    assert sink.texts == ["key: "]
    s.feed("CRET-12")
    s.feed("3456 and sk-")
    s.feed("something else")
    s.close()
    joined = "".join(sink.texts)
    assert joined == "key: [REDACTED] and sk-something else"
    assert not any(secret[:5] in t for t in sink.texts)


async def test_other_events_and_a_new_turn_flush_the_text_first() -> None:
    sink = Sink()
    s = stream(sink)
    s.emit(DELTA, {"turn": 1, "text": "Let me "})
    s.emit(DELTA, {"turn": 1, "text": "look."})
    s.emit("agent.tool_call", {"turn": 1, "tool": "orders.lookup"})
    s.emit(DELTA, {"turn": 2, "text": "Shipped"})
    s.emit(DELTA, {"turn": 2, "text": "!"})
    s.emit(DELTA, {"turn": 3, "text": "Bye"})
    s.close()
    assert [(t, d.get("turn"), d.get("text")) for t, d in sink.events] == [
        (DELTA, 1, "Let me "),
        (DELTA, 1, "look."),
        ("agent.tool_call", 1, None),
        (DELTA, 2, "Shipped!"),  # within the interval: one delta, flushed by the next turn
        (DELTA, 3, "Bye"),
    ]
    assert [d["index"] for t, d in sink.events if t == DELTA] == [0, 1, 2, 3]


async def test_a_failed_attempt_marks_what_it_sent_and_drops_the_rest() -> None:
    sink = Sink()
    s = stream(sink, attempt=3)
    s.feed("Half an ")
    s.feed("answer")  # waiting for the timer
    s.discard()
    assert sink.events == [
        (DELTA, {"attempt": 3, "index": 0, "turn": 1, "text": "Half an "}),
        (DISCARDED, {"attempt": 3, "deltas": 1}),
    ]
    await asyncio.sleep(0.2)  # the timer was cancelled with the attempt
    assert len(sink.events) == 2

    quiet = Sink()
    stream(quiet).discard()  # nothing was sent: nothing to mark
    assert quiet.events == []


async def test_stream_false_sends_no_text_but_the_other_events() -> None:
    sink = Sink()
    s = stream(sink, enabled=False)
    s.emit(DELTA, {"turn": 1, "text": "hidden"})
    s.emit("agent.usage", {"total_tokens": 3})
    s.close()
    s.discard()
    assert sink.events == [("agent.usage", {"total_tokens": 3})]
