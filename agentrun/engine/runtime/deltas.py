"""A streamed answer as `agent.delta` events: coalesced, numbered, never a piece of a secret,
and marked void when its attempt fails.

A provider emits each piece of text as the model writes it (`ctx.emit("agent.delta",
{"turn": N, "text": PIECE})`, one call per server-sent chunk); `call_agent` routes those
through a `DeltaStream`, which is the one place that decides what reaches the event log:

- **Coalesced**: a piece is sent once `interval` (50 ms) passed since the last delta, or at
  once when the text waiting reaches `max_bytes` (1 KiB); text left waiting is sent by a
  timer, so a model that pauses mid-sentence does not hold its last words back. Each delta
  is one commit of the run's batch, so a node streams at most ~20 commits a second.
- **Numbered**: each delta carries `{attempt, index, turn, text}`; `index` counts from 0
  within the attempt, so a reader sees a gap or a repeat at once.
- **Secret-safe**: the engine redacts whole values per event, and a secret split across two
  events would slip past it; so text that could be the start of a secret's value is held
  back until it is known not to be one.
- **Voided**: when the attempt fails after sending deltas (a provider error, a timeout, an
  answer that does not match `output_schema`), `agent.deltas_discarded {attempt, deltas}`
  follows them, so a UI drops that attempt's text; a retry streams again from index 0.

Other events the provider emits (`agent.tool_call`, `agent.usage`) flush the text before
them, so the log keeps the order in which things happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentrun.engine.redact import MIN_SECRET_LENGTH, Redactor

DELTA = "agent.delta"
DISCARDED = "agent.deltas_discarded"
INTERVAL = 0.05
MAX_BYTES = 1024

Emit = Callable[[str, dict[str, Any]], None]


class DeltaStream:
    """Turns a provider's raw text pieces into coalesced `agent.delta` events through `emit`
    (the interpreter's: it appends an event to the run's next commit)."""

    def __init__(
        self,
        emit: Emit,
        *,
        attempt: int,
        secrets: Mapping[str, str],
        enabled: bool = True,
        interval: float = INTERVAL,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self.attempt = attempt
        self.enabled = enabled
        self.interval = interval
        self.max_bytes = max_bytes
        self._clock = clock
        self._secrets = [
            v for v in secrets.values() if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH
        ]
        self._redactor = Redactor(self._secrets)
        self._turn = 1
        # Text that may be the start of a secret (not yet safe to send), and text ready to go.
        self._pending = ""
        self._ready = ""
        self._ready_bytes = 0
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        # Deltas sent in this attempt (the next one's index).
        self.sent = 0

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        """What the provider's `ctx.emit` does: a text piece joins the stream; any other event
        goes out after the text before it."""
        if type_ == DELTA and isinstance(data, dict):
            text = data.get("text")
            turn = data.get("turn", self._turn)
            if isinstance(text, str) and isinstance(turn, int):
                self.feed(text, turn=turn)
                return
        self.flush()
        self._emit(type_, data)

    def feed(self, text: str, *, turn: int = 1) -> None:
        if not self.enabled or not text:
            return
        if turn != self._turn:
            self.flush()
            self._turn = turn
        self._pending += text
        if self._redactor:
            self._pending = self._redactor.text(self._pending)
            cut = len(self._pending) - self._held_suffix(self._pending)
        else:
            cut = len(self._pending)
        if cut:
            piece = self._pending[:cut]
            self._ready += piece
            self._ready_bytes += len(piece.encode("utf-8", "surrogatepass"))
            self._pending = self._pending[cut:]
        if not self._ready:
            return
        wait = self._last + self.interval - self._clock()
        if wait <= 0 or self._ready_bytes >= self.max_bytes:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._due)

    def flush(self) -> None:
        """Sends everything held, the possible start of a secret too (redacted on its own):
        the turn's text is complete."""
        if self._pending:
            self._ready += self._redactor.text(self._pending) if self._redactor else self._pending
            self._pending = ""
        if self._ready:
            self._send()

    def close(self) -> None:
        """The call succeeded: the rest of the text goes out before the node's outcome."""
        self.flush()
        self._cancel_timer()

    def discard(self) -> None:
        """The attempt failed: held text is dropped, and what was sent is marked void."""
        self._cancel_timer()
        self._pending = self._ready = ""
        if self.sent:
            self._emit(DISCARDED, {"attempt": self.attempt, "deltas": self.sent})

    def _due(self) -> None:
        self._timer = None
        if self._ready:
            self._send()

    def _send(self) -> None:
        self._cancel_timer()
        self._emit(
            DELTA,
            {"attempt": self.attempt, "index": self.sent, "turn": self._turn, "text": self._ready},
        )
        self.sent += 1
        self._ready = ""
        self._ready_bytes = 0
        self._last = self._clock()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _held_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some secret value."""
        best = 0
        for value in self._secrets:
            for n in range(min(len(value) - 1, len(text)), best, -1):
                if text.endswith(value[:n]):
                    best = n
                    break
        return best
