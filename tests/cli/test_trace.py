"""`agentrun trace`'s drawing: one bar character per attempt outcome."""

from __future__ import annotations

from agentrun.cli.trace import render_trace
from agentrun.v1 import execution_pb2 as pb

S = pb.NodeExecution.State


def _trace(outcome: int, *, error: bool = False) -> pb.ExecutionTrace:
    trace = pb.ExecutionTrace()
    trace.execution.name = "executions/x"
    trace.execution.state = pb.Execution.STATE_CANCELLED
    trace.execution.start_time.FromSeconds(100)
    trace.execution.end_time.FromSeconds(110)
    node = trace.nodes.add(node_id="work", state=outcome)
    node.end_time.FromSeconds(110)
    attempt = node.attempts.add(attempt=1, outcome=outcome)
    attempt.start_time.FromSeconds(100)
    attempt.end_time.FromSeconds(110)
    if error:
        attempt.error.type = "cancelled"
        attempt.error.message = "the execution was cancelled"
    return trace


def _bar(text: str) -> str:
    row = next(line for line in text.splitlines() if line.startswith("work"))
    return row.split("|")[1].strip()


def test_a_cancelled_attempt_is_not_drawn_as_a_success() -> None:
    ok = _bar(render_trace(_trace(S.STATE_SUCCEEDED), width=20))
    assert set(ok) == {"#"}
    for error in (False, True):
        text = render_trace(_trace(S.STATE_CANCELLED, error=error), width=20)
        assert set(_bar(text)) == {"~"}, text
        assert "attempt 1 at +0ms: CANCELLED" in text  # and it is named under the row


def test_a_failed_attempt_is_drawn_as_a_failure() -> None:
    assert set(_bar(render_trace(_trace(S.STATE_FAILED, error=True), width=20))) == {"x"}
