"""Live progress of an execution on a terminal: one line per node state change.

Fed with the engine's execution events (`engine.watch`), it writes lines such as

      0.00s  execution      running
      0.01s  classify       running
      0.02s  classify       succeeded
      0.03s  flaky          retrying  attempt 1, tool_error: upstream down; next in 0.10s

Elapsed time counts from the execution's first event. Items of a map node (`ID[3]`) are shown
only when they retry or fail, so that a 1,000-way fan-out stays readable.
"""

from __future__ import annotations

from typing import Any, TextIO

from agentrun.cli.output import short_json
from agentrun.storage.records import EventRecord

__all__ = ["ProgressPrinter"]

_RESET = "\033[0m"
_COLOURS = {
    "succeeded": "\033[32m",  # green
    "completed": "\033[32m",
    "failed": "\033[31m",  # red
    "timed_out": "\033[31m",
    "compensation_failed": "\033[31m",
    "retrying": "\033[33m",  # yellow
    "cancelled": "\033[33m",
    "escalated": "\033[33m",
    "compensating": "\033[33m",
    "compensated": "\033[33m",
    "running": "\033[36m",  # cyan
    "waiting": "\033[35m",  # magenta
    "paused": "\033[35m",
    "skipped": "\033[2m",  # dim
    "ready": "\033[2m",
    "pending": "\033[2m",
    "received": "\033[34m",  # blue
}
_ITEM_STATES_SHOWN = frozenset({"retrying", "failed", "timed_out"})


class ProgressPrinter:
    """Writes one line per event worth showing; `width` pads the node column."""

    def __init__(self, stream: TextIO, *, color: bool = False, width: int = 14) -> None:
        self._stream = stream
        self._color = color
        self._width = width
        self._t0: float | None = None

    def on_event(self, event: EventRecord) -> None:
        line = self.format(event)
        if line is None:
            return
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not fail the run

    def format(self, event: EventRecord) -> str | None:
        """The line for `event`, or None when it is not worth a line."""
        if self._t0 is None:
            self._t0 = event.time
        elapsed = max(0.0, event.time - self._t0)
        kind, _, state = event.type.partition(".")
        data = event.data or {}
        if kind == "execution":
            subject = "execution"
            detail = _error_text(data.get("error")) if data.get("error") else ""
        elif kind == "node":
            subject = event.node_id or "?"
            if "[" in subject and state not in _ITEM_STATES_SHOWN:
                return None
            detail = _node_detail(state, data)
        elif kind == "signal":
            subject = "signal"
            name = data.get("signal") or data.get("name") or ""
            detail = f"{name}" + (f" {short_json(data['data'], 60)}" if "data" in data else "")
        else:
            return None
        label = state.replace("_", " ") if state else event.type
        word = f"{label:<10}"
        if self._color:
            colour = _COLOURS.get(state, "")
            word = f"{colour}{word}{_RESET}" if colour else word
        line = f"{elapsed:7.2f}s  {subject:<{self._width}} {word}"
        if detail:
            line += f" {detail}"
        return line.rstrip()


def _node_detail(state: str, data: dict[str, Any]) -> str:
    parts: list[str] = []
    attempt = data.get("attempt")
    if (
        state in ("running", "retrying", "failed")
        and isinstance(attempt, int)
        and attempt > 1
        or state == "retrying"
        and isinstance(attempt, int)
    ):
        parts.append(f"attempt {attempt}")
    if data.get("error") and state in ("retrying", "failed", "escalated", "skipped"):
        parts.append(_error_text(data["error"]))
    if state == "retrying" and isinstance(data.get("delay"), int | float):
        parts.append(f"next in {data['delay']:.2f}s")
    if state == "skipped" and data.get("skip_reason"):
        parts.append(str(data["skip_reason"]))
    if state == "waiting" and data.get("signal"):
        parts.append(f"for signal {data['signal']}")
    return ", ".join(parts)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type") or "error"
        message = error.get("message") or ""
        return f"{kind}: {message}" if message else str(kind)
    return str(error)
