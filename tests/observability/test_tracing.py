"""Spans from an in-memory exporter: RPC -> execution -> node attempts, with a retry, a
parallel branch, an LLM call with tokens, and a caller's traceparent continued."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from agentrun.server.observability import parse_traceparent
from agentrun.server.observability.tracing import format_traceparent, trace_id_of
from tests.server.conftest import STOP_GRACE

from .conftest import Stack, make_stack

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


def _by_name(spans: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


async def test_execution_spans_nest_under_the_rpc(stack: Stack) -> None:
    execution = await stack.run()
    assert execution.state.value == "SUCCEEDED"
    spans = stack.exporter.get_finished_spans()
    names = _by_name(spans)

    [rpc] = names["agentrun.v1.ExecutionService/StartExecution"]
    assert rpc.kind is SpanKind.SERVER
    assert rpc.attributes["rpc.method"] == "StartExecution"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    [ex] = names["execution traced"]
    assert ex.parent.span_id == rpc.context.span_id
    assert ex.context.trace_id == rpc.context.trace_id
    assert ex.attributes["agentrun.execution.id"] == execution.id
    assert ex.attributes["agentrun.workflow"] == "traced"
    assert ex.attributes["agentrun.workflow.version"] == 1
    assert ex.attributes["agentrun.execution.state"] == "SUCCEEDED"
    # The trace id is stored on the execution.
    assert trace_id_of(execution.labels["traceparent"]) == f"{ex.context.trace_id:032x}"

    # The retried node: two attempt spans, children of the execution, the first an error.
    flaky = sorted(names["tool core.fail"], key=lambda s: s.attributes["agentrun.node.attempt"])
    assert [s.attributes["agentrun.node.attempt"] for s in flaky] == [1, 2]
    assert all(s.parent.span_id == ex.context.span_id for s in flaky)
    assert flaky[0].status.status_code is StatusCode.ERROR
    assert flaky[0].attributes["error.type"] == "tool_error"
    assert flaky[1].status.status_code is StatusCode.UNSET
    assert flaky[0].end_time <= flaky[1].start_time
    assert flaky[0].kind is SpanKind.CLIENT

    # The parallel branch: a sibling that overlaps the retried node.
    [slow] = names["tool core.sleep"]
    assert slow.parent.span_id == ex.context.span_id
    assert slow.attributes["agentrun.node.id"] == "slow"
    assert slow.start_time < flaky[1].end_time and flaky[0].start_time < slow.end_time

    # The LLM call: after both branches, with its tokens.
    [ask] = names["agent llm/small"]
    assert ask.parent.span_id == ex.context.span_id
    assert ask.attributes["gen_ai.system"] == "llm"
    assert ask.attributes["gen_ai.request.model"] == "small"
    assert ask.attributes["gen_ai.usage.input_tokens"] == 10
    assert ask.attributes["gen_ai.usage.output_tokens"] == 5
    assert ask.start_time >= max(slow.end_time, flaky[1].end_time)
    assert ex.attributes["agentrun.usage.prompt_tokens"] == 10
    # Everything is one trace; the execution span ends last.
    assert {
        s.context.trace_id
        for s in spans
        if s.name != "agentrun.v1.WorkflowService/CreateWorkflow"
        and not s.name.endswith(("GetExecution",))
    } == {rpc.context.trace_id}
    assert ex.end_time >= ask.end_time


async def test_a_callers_traceparent_continues_into_the_execution(stack: Stack) -> None:
    execution = await stack.run(metadata=(("traceparent", CALLER_TRACEPARENT),))
    spans = _by_name(stack.exporter.get_finished_spans())
    [rpc] = spans["agentrun.v1.ExecutionService/StartExecution"]
    assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
    assert rpc.parent.span_id == 0x00F067AA0BA902B7
    assert rpc.parent.is_remote
    [ex] = spans["execution traced"]
    assert f"{ex.context.trace_id:032x}" == CALLER_TRACE
    assert ex.parent.span_id == rpc.context.span_id
    for attempt in spans["tool core.fail"]:
        assert f"{attempt.context.trace_id:032x}" == CALLER_TRACE
    assert trace_id_of(execution.labels["traceparent"]) == CALLER_TRACE


async def test_the_trace_id_is_kept_when_the_server_does_not_trace() -> None:
    stack = await make_stack(tracing=False)
    try:
        execution = await stack.run(metadata=(("traceparent", CALLER_TRACEPARENT),))
        assert execution.labels["traceparent"] == CALLER_TRACEPARENT
        assert stack.exporter.get_finished_spans() == ()
        # A malformed traceparent is not stored.
        bad = await stack.run(metadata=(("traceparent", "00-zz-11-01"),))
        assert "traceparent" not in bad.labels
    finally:
        await stack.client.close()
        await stack.server.stop(STOP_GRACE)
        await stack.engine.stop(grace=0)
        stack.observability.close()


async def test_sampling_ratio_zero_records_nothing_but_keeps_ids() -> None:
    stack = await make_stack(sample_ratio=0.0)
    try:
        execution = await stack.run()
        assert execution.state.value == "SUCCEEDED"
        assert stack.exporter.get_finished_spans() == ()
        ctx = parse_traceparent(execution.labels["traceparent"])
        assert ctx is not None and not ctx.trace_flags.sampled
        # A caller's sampled flag wins over the ratio.
        await stack.run(metadata=(("traceparent", CALLER_TRACEPARENT),))
        assert any(s.name == "execution traced" for s in stack.exporter.get_finished_spans())
    finally:
        await stack.client.close()
        await stack.server.stop(STOP_GRACE)
        await stack.engine.stop(grace=0)
        stack.observability.close()


CHILD = """
name: parent
nodes:
  - id: call
    workflow: {name: child}
"""
CHILD_WF = """
name: child
nodes:
  - {id: inner, tool: {name: core.echo, args: {x: 1}}}
"""


async def test_a_child_execution_nests_under_its_workflow_node(stack: Stack) -> None:
    from agentrun.engine import load_workflow

    await stack.client.create_workflow(load_workflow(CHILD_WF))
    execution = await stack.run(CHILD)
    assert execution.state.value == "SUCCEEDED"
    spans = _by_name(stack.exporter.get_finished_spans())
    [parent] = spans["execution parent"]
    [node] = spans["workflow child"]
    [child] = spans["execution child"]
    [inner] = spans["tool core.echo"]
    assert node.parent.span_id == parent.context.span_id
    assert child.parent.span_id == node.context.span_id
    assert inner.parent.span_id == child.context.span_id
    assert child.attributes["agentrun.execution.parent"] == execution.id


def test_traceparent_round_trip() -> None:
    ctx = parse_traceparent(CALLER_TRACEPARENT)
    assert ctx is not None and ctx.is_remote and ctx.trace_flags.sampled
    assert format_traceparent(ctx) == CALLER_TRACEPARENT
    for bad in (
        "",
        "00-0000-00f067aa0ba902b7-01",
        f"ff-{CALLER_TRACE}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{CALLER_TRACE}-{'0' * 16}-01",
    ):
        assert parse_traceparent(bad) is None


@pytest.mark.parametrize("exporter", ["console", "otlp", "none"])
def test_exporters_by_config(exporter: str) -> None:
    from agentrun.server import ServerConfig
    from agentrun.server.observability import Observability

    config = ServerConfig.load(
        env={
            "AGENTRUN_TRACING": exporter,
            "AGENTRUN_TRACE_SAMPLE_RATIO": "0.5",
            "AGENTRUN_OTLP_ENDPOINT": "http://127.0.0.1:1",
        }
    )
    obs = Observability.from_config(config)
    assert obs.tracing is (exporter != "none")
    # Off is absent: no engine hooks, no interceptor.
    assert (obs.instrumentation() is None) is (exporter == "none")
    assert (obs.interceptor() is None) is (exporter == "none")
    obs.close()


def test_bus_lag_is_observed() -> None:
    import time

    from agentrun.server.observability import Metrics, Telemetry
    from agentrun.storage.records import EventRecord

    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics)
    telemetry.events_published("e", [EventRecord("e", 1, "node.ready", time.time() - 0.2, "a")])
    [family] = [f for f in metrics.registry.collect() if f.name == "agentrun_event_bus_lag_seconds"]
    samples = {s.name: s.value for s in family.samples if not s.labels.get("le")}
    assert samples["agentrun_event_bus_lag_seconds_count"] == 1
    assert 0.2 <= samples["agentrun_event_bus_lag_seconds_sum"] < 5


SLOW_AGENT = """
name: slow-agent
nodes:
  - {id: think, agent: {model: llm/slow, prompt: "hm"}}
"""


async def test_a_call_cancelled_mid_flight_ends_its_span_once(stack: Stack, caplog: Any) -> None:
    import asyncio

    from agentrun.engine import load_workflow

    await stack.client.create_workflow(load_workflow(SLOW_AGENT))
    execution = await stack.client.start_execution("slow-agent", {})

    async def mid_flight() -> bool:
        """The StartExecution span ended and the agent's usage event is committed: the call
        now sleeps (30 s)."""
        started = any(
            s.name == "agentrun.v1.ExecutionService/StartExecution"
            for s in stack.exporter.get_finished_spans()
        )
        events = await stack.engine.list_events(execution.id)
        return started and any(e.type == "agent.usage" for e in events)

    async with asyncio.timeout(30):
        while not await mid_flight():
            await asyncio.sleep(0.02)
    await stack.client.cancel_execution(execution.id)
    await stack.engine.wait(execution.id, timeout=30)
    async with asyncio.timeout(30):  # the execution's span ends as the execution does
        while "execution slow-agent" not in _by_name(stack.exporter.get_finished_spans()):
            await asyncio.sleep(0.02)
    spans = _by_name(stack.exporter.get_finished_spans())
    [think] = spans["agent llm/slow"]
    [ex] = spans["execution slow-agent"]
    assert ex.attributes["agentrun.execution.state"] == "CANCELLED"
    assert think.attributes["gen_ai.usage.input_tokens"] == 10
    assert think.end_time <= ex.end_time
    assert "ended span" not in caplog.text and "hook" not in caplog.text
