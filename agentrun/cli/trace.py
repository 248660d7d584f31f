"""`agentrun trace`: an ExecutionTrace drawn as a text timeline, one row per node.

Bar characters: '.' waiting for a scheduler slot, '#' an attempt that succeeded (or is still
running), 'x' one that failed, '~' one that was cancelled (the execution was cancelled or
timed out while it ran), '-' a retry delay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.protobuf.duration_pb2 import Duration
    from google.protobuf.timestamp_pb2 import Timestamp

    from agentrun.v1.execution_pb2 import AttemptTrace, ExecutionTrace

__all__ = ["render_trace"]

_BAR = {"queue": ".", "ok": "#", "failed": "x", "cancelled": "~", "delay": "-"}


def _seconds(ts: Timestamp) -> float | None:
    return ts.seconds + ts.nanos / 1e9 if ts.seconds or ts.nanos else None


def _duration(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _fmt_seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{value / 60:.1f}m"


def render_trace(trace: ExecutionTrace, width: int = 50, now: float | None = None) -> str:
    """An ExecutionTrace as a text timeline: one row per node and a bar per row."""
    import time as _time

    from agentrun.v1 import execution_pb2 as ex_pb

    execution = trace.execution
    node_state = ex_pb.NodeExecution.State
    exec_state = ex_pb.Execution.State.Name(execution.state).removeprefix("STATE_")
    now = _time.time() if now is None else now
    t0 = _seconds(execution.start_time) or _seconds(execution.create_time) or now
    t1 = _seconds(execution.end_time) or now
    for node in trace.nodes:
        for attempt in node.attempts:
            t1 = max(t1, _seconds(attempt.end_time) or t1)
    span = max(t1 - t0, 1e-6)
    scale = width / span

    def col(t: float) -> int:
        return min(width - 1, max(0, int((t - t0) * scale)))

    lines = [
        f"{execution.name}  {execution.workflow} v{execution.workflow_version}  {exec_state}  "
        f"{_fmt_seconds(t1 - t0)}" + (f"  trace {trace.trace_id}" if trace.trace_id else "")
    ]
    if trace.usage:
        lines.append("usage: " + ", ".join(f"{k} {v:g}" for k, v in sorted(trace.usage.items())))
    name_w = max([len(n.node_id) for n in trace.nodes] + [4]) + 2
    lines.append(
        f"{'node':{name_w}} {'state':20} {'start':>8} {'took':>8} {'queue':>7}  |{'':{width}}|"
    )
    for node in trace.nodes:
        bar = [" "] * width
        for attempt in node.attempts:
            start = _seconds(attempt.start_time)
            if start is None:
                continue
            end = _seconds(attempt.end_time) or t1
            queued = _duration(attempt.queue_duration)
            for c in range(col(start - queued), col(start)):
                bar[c] = _BAR["queue"]
            mark = _mark(attempt)
            for c in range(col(start), max(col(end), col(start) + 1)):
                bar[c] = mark
            if attempt.HasField("retry_delay"):
                for c in range(col(end) + 1, col(end + _duration(attempt.retry_delay)) + 1):
                    if c < width and bar[c] == " ":
                        bar[c] = _BAR["delay"]
        first = (
            _seconds(node.attempts[0].start_time) if node.attempts else _seconds(node.ready_time)
        )
        last = _seconds(node.end_time)
        start_txt = f"+{_fmt_seconds(first - t0)}" if first is not None else ""
        took = _fmt_seconds(last - first) if first is not None and last is not None else ""
        queue = _duration(node.queue_duration)
        state = node_state.Name(node.state).removeprefix("STATE_")
        indent = (
            "  "
            if ("[" in node.node_id or node.node_id.endswith((".compensate", ".fallback")))
            else ""
        )
        extra = []
        if len(node.attempts) > 1:
            extra.append(f"{len(node.attempts)} attempts")
        if node.usage:
            extra.append(" ".join(f"{k}={v:g}" for k, v in sorted(node.usage.items())))
        if node.skip_reason:
            extra.append(f"skipped: {node.skip_reason}")
        lines.append(
            f"{indent + node.node_id:{name_w}} {state:20} {start_txt:>8} {took:>8} "
            f"{_fmt_seconds(queue) if queue >= 0.0005 else '':>7}  |{''.join(bar)}|"
            + (f"  {'; '.join(extra)}" if extra else "")
        )
        for attempt in node.attempts:
            if not attempt.HasField("error") and attempt.outcome != node_state.STATE_CANCELLED:
                continue
            start = _seconds(attempt.start_time) or t0
            outcome = (
                node_state.Name(attempt.outcome).removeprefix("STATE_")
                if attempt.outcome
                else "RUNNING"
            )
            delay = (
                f", retry in {_fmt_seconds(_duration(attempt.retry_delay))}"
                if attempt.HasField("retry_delay")
                else ""
            )
            why = (
                f" {attempt.error.type}: {attempt.error.message[:100]}"
                if attempt.HasField("error")
                else ""
            )
            lines.append(
                f"{'':{name_w}}   attempt {attempt.attempt} at +{_fmt_seconds(start - t0)}: {outcome}"
                f"{why}{delay}"
            )
    return "\n".join(lines)


def _mark(attempt: AttemptTrace) -> str:
    """The bar character of one attempt: by its outcome, then by whether it has an error."""
    from agentrun.v1.execution_pb2 import NodeExecution

    if attempt.outcome == NodeExecution.STATE_CANCELLED:
        return _BAR["cancelled"]
    if attempt.outcome == NodeExecution.STATE_SUCCEEDED or not attempt.HasField("error"):
        return _BAR["ok"]
    return _BAR["failed"]
