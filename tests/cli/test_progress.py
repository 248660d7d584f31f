"""The live progress lines of `agentrun run`."""

from __future__ import annotations

import io

from agentrun.cli.progress import ProgressPrinter
from agentrun.storage.records import EventRecord


def _event(seq: int, type: str, t: float, node: str | None = None, **data) -> EventRecord:
    return EventRecord("e1", seq, type, t, node_id=node, data=data or None)


def test_lines_per_state_change() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, color=False, width=8)
    for event in [
        _event(1, "execution.running", 100.0),
        _event(2, "node.running", 100.01, "fetch", attempt=1),
        _event(
            3,
            "node.retrying",
            100.02,
            "fetch",
            attempt=1,
            delay=0.1,
            error={"type": "tool_error", "message": "down"},
        ),
        _event(4, "node.running", 100.2, "fetch", attempt=2),
        _event(5, "node.succeeded", 100.25, "fetch", attempt=2),
        _event(6, "node.succeeded", 100.26, "each[3]"),  # map items: only failures shown
        _event(7, "node.skipped", 100.3, "other", skip_reason="dead_path"),
        _event(8, "node.waiting", 100.3, "approve", signal="approval"),
        _event(9, "execution.succeeded", 101.5),
    ]:
        printer.on_event(event)
    assert out.getvalue().splitlines() == [
        "   0.00s  execution running",
        "   0.01s  fetch    running",
        "   0.02s  fetch    retrying   attempt 1, tool_error: down, next in 0.10s",
        "   0.20s  fetch    running    attempt 2",
        "   0.25s  fetch    succeeded",
        "   0.30s  other    skipped    dead_path",
        "   0.30s  approve  waiting    for signal approval",
        "   1.50s  execution succeeded",
    ]


def test_colour() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, color=True, width=4)
    printer.on_event(_event(1, "node.failed", 5.0, "x", error={"type": "timeout", "message": ""}))
    assert out.getvalue() == "   0.00s  x    \033[31mfailed    \033[0m timeout\n"
