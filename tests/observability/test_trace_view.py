"""GetExecutionTrace (per node: state, attempts with start/end and error, queue wait, tokens)
and `agentrun trace ID`."""

from __future__ import annotations

import asyncio
import contextlib
import io

from agentrun.server.observability import build_trace
from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
)
from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import execution_service_pb2 as pb

from .conftest import Stack

S = ex_pb.NodeExecution


async def test_get_execution_trace(stack: Stack) -> None:
    execution = await stack.run()
    response = await stack.client.execution_service.GetExecutionTrace(
        pb.GetExecutionTraceRequest(name=execution.id)
    )
    trace = response.trace
    assert trace.execution.name == execution.name
    assert len(trace.trace_id) == 32 and trace.trace_id in execution.labels["traceparent"]
    assert trace.usage["prompt_tokens"] == 10
    nodes = {n.node_id: n for n in trace.nodes}
    assert trace.nodes[0].node_id == "start"
    assert set(nodes) == {"start", "flaky", "slow", "ask"}
    assert all(n.state == S.STATE_SUCCEEDED for n in trace.nodes)

    flaky = nodes["flaky"]
    assert [a.attempt for a in flaky.attempts] == [1, 2]
    first, second = flaky.attempts
    assert first.outcome == S.STATE_RETRYING
    assert first.error.type == "tool_error"
    assert first.retry_delay.ToNanoseconds() == 1_000_000
    assert first.end_time.ToNanoseconds() <= second.start_time.ToNanoseconds()
    assert second.outcome == S.STATE_SUCCEEDED and not second.HasField("error")
    assert flaky.end_time.ToNanoseconds() == second.end_time.ToNanoseconds()

    slow = nodes["slow"].attempts[0]
    assert (slow.end_time.ToNanoseconds() - slow.start_time.ToNanoseconds()) / 1e9 >= 0.05
    assert nodes["ask"].usage == {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01}
    assert (
        nodes["start"].attempts[0].outcome == S.STATE_SUCCEEDED
    )  # inline nodes have one attempt too


async def test_agentrun_trace_prints_a_timeline(stack: Stack) -> None:
    from agentrun.cli import main

    execution = await stack.run()
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return main(
                [
                    "trace",
                    execution.id,
                    "--server",
                    f"127.0.0.1:{stack.server.port}",
                    "--width",
                    "40",
                ]
            )

    assert await asyncio.to_thread(run) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith(f"executions/{execution.id}  workflows/traced v1  SUCCEEDED")
    assert "trace " in lines[0]
    assert "completion_tokens 5" in lines[1]
    row = {line.split()[0]: line for line in lines[3:] if line and not line.startswith(" ")}
    assert set(row) >= {"start", "flaky", "slow", "ask"}
    bar = row["flaky"].split("|")[1]
    assert len(bar) == 40 and "x" in bar and "#" in bar
    assert "2 attempts" in row["flaky"]
    assert "prompt_tokens=10" in row["ask"]
    assert "attempt 1 at +" in text and "RETRYING tool_error" in text
    # ask starts after slow ends: its bar begins right of slow's.
    assert row["ask"].split("|")[1].index("#") >= row["slow"].split("|")[1].rindex("#")

    out.truncate(0)
    out.seek(0)

    def missing() -> int:
        with contextlib.redirect_stderr(io.StringIO()):
            return main(["trace", "nope", "--server", f"127.0.0.1:{stack.server.port}"])

    assert await asyncio.to_thread(missing) == 1


def test_queue_wait_from_events() -> None:
    ex = ExecutionRecord(
        "e",
        "default",
        "w",
        1,
        ExecutionState.SUCCEEDED,
        {},
        100.0,
        started_at=100.0,
        ended_at=110.0,
        labels={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    events = [
        EventRecord("e", 3, "node.ready", 100.0, "a"),
        EventRecord(
            "e",
            4,
            "node.running",
            101.5,
            "a",
            {"attempt": 1, "queued_seconds": 1.5, "rate_limited": True},
        ),
        EventRecord(
            "e",
            5,
            "node.retrying",
            102.0,
            "a",
            {"attempt": 1, "error": {"type": "timeout", "message": "t"}, "delay": 1.0},
        ),
        EventRecord("e", 6, "node.ready", 103.0, "a", {"attempt": 2}),
        EventRecord("e", 7, "node.running", 103.25, "a", {"attempt": 2}),
        EventRecord("e", 8, "node.succeeded", 104.0, "a", {"attempt": 2}),
        EventRecord("e", 9, "node.running", 104.0, "m[0]", {"attempt": 1, "index": 0}),
        EventRecord("e", 10, "node.ready", 104.0, "m"),
        EventRecord("e", 11, "node.succeeded", 105.0, "m[0]", {"attempt": 1, "index": 0}),
    ]
    nodes = [
        NodeRecord("e", "a", NodeState.SUCCEEDED, attempt=2),
        NodeRecord("e", "never", NodeState.PENDING),
    ]
    view = build_trace(ex, nodes, events)
    assert view.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [n.node_id for n in view.nodes] == ["a", "m", "m[0]", "never"]
    a = view.nodes[0]
    assert a.ready == 100.0 and a.end == 104.0
    assert [(x.attempt, x.queued_seconds, x.rate_limited, x.outcome) for x in a.attempts] == [
        (1, 1.5, True, "RETRYING"),
        (2, 0.25, False, "SUCCEEDED"),
    ]
    assert a.queued_seconds == 1.75
    assert (
        a.attempts[0].error == {"type": "timeout", "message": "t"}
        and a.attempts[0].retry_delay == 1.0
    )
