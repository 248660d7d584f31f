"""Scrape /metrics over HTTP after a known workload: names, types and values."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentrun.client import AgentrunError, NotFound
from agentrun.server.observability import Metrics
from tests.server.conftest import STOP_GRACE

from .conftest import Stack

BREAKER = """
name: breaking
circuit_breakers:
  core.fail: {failure_threshold: 1, window: 1m, reset_timeout: 1m}
nodes:
  - id: boom
    tool: {name: core.fail, args: {type: tool_error}}
"""

SAGA = """
name: saga
nodes:
  - id: book
    tool: {name: core.echo, args: {x: 1}}
    compensate: {tool: {name: core.echo, args: {undo: 1}}}
  - id: pay
    needs: [book]
    tool: {name: core.fail, args: {type: payments.declined}}
error_handlers:
  - {match: {errors: [payments.declined]}, action: compensate}
"""


async def scrape(
    stack: Stack, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """The families on /metrics. With `until`, scrapes again (for up to `timeout`) until it
    holds: a refused call's status reaches the client (grpc aio's abort sends it at once)
    before the interceptor has counted the call, a moment later."""

    def get() -> str:
        with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return response.read().decode()

    deadline = time.monotonic() + timeout
    while True:
        text = await asyncio.to_thread(get)
        families = {family.name: family for family in text_string_to_metric_families(text)}
        if until is None or until(families) or time.monotonic() > deadline:
            return families
        await asyncio.sleep(0.05)


def counted(method: str, code: str) -> Callable[[dict[str, Any]], bool]:
    """`until` for scrape: an RPC with that method and status code has been counted."""

    def check(families: dict[str, Any]) -> bool:
        family = families.get("agentrun_rpc_requests")
        return family is not None and any(
            s.labels.get("method") == method and s.labels.get("code") == code
            for s in family.samples
        )

    return check


def value(
    families: dict[str, Any], family_name: str, sample: str | None = None, **labels: str
) -> float:
    name = family_name
    family = families[name]
    total = 0.0
    found = False
    for s in family.samples:
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
            found = True
    assert found, f"no sample {sample or name} {labels} in {family.samples}"
    return total


async def test_metrics_after_a_known_workload(stack: Stack) -> None:
    execution = await stack.run()
    assert execution.state.value == "SUCCEEDED"
    with pytest.raises(NotFound):
        await stack.client.get_execution("nope")
    families = await scrape(stack, until=counted("GetExecution", "NOT_FOUND"))

    # Types (the parser strips _total from counter family names).
    assert families["agentrun_rpc_requests"].type == "counter"
    assert families["agentrun_rpc_duration_seconds"].type == "histogram"
    assert families["agentrun_executions_running"].type == "gauge"
    assert families["agentrun_scheduler_queue_depth"].type == "gauge"

    assert (
        value(
            families,
            "agentrun_rpc_requests",
            "agentrun_rpc_requests_total",
            service="agentrun.v1.ExecutionService",
            method="StartExecution",
            code="OK",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_rpc_requests",
            "agentrun_rpc_requests_total",
            method="GetExecution",
            code="NOT_FOUND",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_rpc_duration_seconds",
            "agentrun_rpc_duration_seconds_count",
            method="StartExecution",
            code="OK",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_executions_started",
            "agentrun_executions_started_total",
            workflow="traced",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_executions_finished",
            "agentrun_executions_finished_total",
            workflow="traced",
            status="SUCCEEDED",
        )
        == 1
    )
    assert value(families, "agentrun_executions_running", workflow="traced") == 0
    assert (
        value(
            families,
            "agentrun_execution_duration_seconds",
            "agentrun_execution_duration_seconds_count",
            workflow="traced",
            status="SUCCEEDED",
        )
        == 1
    )
    # flaky: 2 attempts (1 error), slow: 1, ask (agent): 1.
    assert (
        value(
            families,
            "agentrun_node_duration_seconds",
            "agentrun_node_duration_seconds_count",
            kind="tool",
            outcome="error",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_node_duration_seconds",
            "agentrun_node_duration_seconds_count",
            kind="tool",
            outcome="success",
        )
        == 2
    )
    assert (
        value(
            families,
            "agentrun_node_duration_seconds",
            "agentrun_node_duration_seconds_count",
            kind="agent",
            outcome="success",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_node_duration_seconds",
            "agentrun_node_duration_seconds_sum",
            kind="tool",
            outcome="success",
        )
        >= 0.05
    )  # core.sleep 0.05
    assert value(families, "agentrun_nodes_running", kind="tool") == 0
    assert (
        value(families, "agentrun_node_retries", "agentrun_node_retries_total", workflow="traced")
        == 1
    )
    assert (
        value(
            families, "agentrun_nodes_finished", "agentrun_nodes_finished_total", status="succeeded"
        )
        == 4
    )
    assert (
        value(
            families,
            "agentrun_llm_tokens",
            "agentrun_llm_tokens_total",
            provider="llm",
            model="small",
            type="prompt",
        )
        == 10
    )
    assert (
        value(
            families,
            "agentrun_llm_tokens",
            "agentrun_llm_tokens_total",
            provider="llm",
            model="small",
            type="completion",
        )
        == 5
    )
    assert value(
        families,
        "agentrun_llm_cost_usd",
        "agentrun_llm_cost_usd_total",
        provider="llm",
        model="small",
    ) == pytest.approx(0.01)
    assert (
        value(
            families,
            "agentrun_store_commit_duration_seconds",
            "agentrun_store_commit_duration_seconds_count",
        )
        >= 4
    )
    assert (
        value(families, "agentrun_events", "agentrun_events_total") == execution.last_sequence - 1
    )
    assert value(families, "agentrun_scheduler_queue_depth") == 0

    # No execution ids anywhere in the labels.
    for family in families.values():
        for sample in family.samples:
            assert execution.id not in sample.labels.values()


async def test_breakers_and_compensations(stack: Stack) -> None:
    await stack.run(SAGA)  # first: the breaker opens for every later core.fail call
    await stack.run(BREAKER)
    families = await scrape(stack)
    assert value(families, "agentrun_circuit_breaker_state", name="core.fail") == 2
    assert (
        value(
            families,
            "agentrun_circuit_breaker_transitions",
            "agentrun_circuit_breaker_transitions_total",
            name="core.fail",
            state="open",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_compensations",
            "agentrun_compensations_total",
            workflow="saga",
            outcome="compensated",
        )
        == 1
    )
    assert (
        value(
            families,
            "agentrun_executions_finished",
            "agentrun_executions_finished_total",
            workflow="saga",
            status="COMPENSATED",
        )
        == 1
    )


RATE = """
name: limited
nodes:
  - {id: a, rate_limit: slowly, tool: {name: core.echo, args: {}}}
  - {id: b, rate_limit: slowly, tool: {name: core.echo, args: {}}}
  - {id: c, rate_limit: slowly, tool: {name: core.echo, args: {}}}
"""


async def test_rate_limit_waits_and_queue_wait() -> None:
    from agentrun.engine.scheduler import SchedulerConfig

    from .conftest import make_stack

    limits = {"rate_limits": {"slowly": {"rate": 20, "per": "1s", "burst": 1}}}
    stack = await make_stack(scheduler=SchedulerConfig.from_mapping(limits))
    try:
        execution = await stack.run(RATE)
        assert execution.state.value == "SUCCEEDED"
        families = await scrape(stack)
        assert value(families, "agentrun_rate_limit_waits", "agentrun_rate_limit_waits_total") >= 1
        assert (
            value(
                families,
                "agentrun_node_queue_wait_seconds",
                "agentrun_node_queue_wait_seconds_count",
            )
            == 3
        )
        assert (
            value(
                families, "agentrun_node_queue_wait_seconds", "agentrun_node_queue_wait_seconds_sum"
            )
            > 0.04
        )
    finally:
        await stack.client.close()
        await stack.server.stop(STOP_GRACE)
        await stack.engine.stop(grace=0)
        stack.observability.close()


async def test_refused_calls_are_counted_with_their_code(stack: Stack) -> None:
    await stack.server.drain()
    with pytest.raises(AgentrunError):
        await stack.client.get_execution("any")
    families = await scrape(stack, until=counted("GetExecution", grpc.StatusCode.UNAVAILABLE.name))
    assert (
        value(
            families,
            "agentrun_rpc_requests",
            "agentrun_rpc_requests_total",
            method="GetExecution",
            code=grpc.StatusCode.UNAVAILABLE.name,
        )
        >= 1
    )  # the SDK retries


def test_usage_labels_from_the_event_or_the_node() -> None:
    from agentrun.server.observability import Telemetry
    from agentrun.storage.records import EventRecord, ExecutionRecord, ExecutionState

    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics)
    record = ExecutionRecord("e", "t", "w", 1, ExecutionState.RUNNING, {}, 0.0)
    telemetry.execution_started(record)
    with telemetry.attempt(record, "ask", "agent", 1, "openai/gpt-small"):
        pass
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    telemetry.events_committed(
        record,
        [
            EventRecord("e", 3, "agent.usage", 1.0, "ask", {**usage, "model": "gpt-small-2025"}),
            EventRecord("e", 4, "agent.usage", 1.0, "ask", usage),
        ],
        0.001,
    )
    tokens = {
        (s.labels["provider"], s.labels["model"], s.labels["type"]): s.value
        for f in metrics.registry.collect()
        if f.name == "agentrun_llm_tokens"
        for s in f.samples
    }
    assert tokens == {
        ("openai", "gpt-small-2025", "prompt"): 3,
        ("openai", "gpt-small-2025", "completion"): 2,
        ("openai", "gpt-small", "prompt"): 3,
        ("openai", "gpt-small", "completion"): 2,
    }


async def test_with_auth_and_access_log() -> None:
    from agentrun.server.auth import ApiKey

    from .conftest import make_stack

    stack = await make_stack(
        api_key="k1", api_keys=[ApiKey("k1", "acme", name="acme")], access_log=True
    )
    try:
        execution = await stack.run()
        assert execution.state.value == "SUCCEEDED"
        from agentrun.client import AsyncClient

        async with AsyncClient(f"127.0.0.1:{stack.server.port}", api_key="wrong") as intruder:
            with pytest.raises(AgentrunError):
                await intruder.get_execution(execution.id)
        families = await scrape(stack, until=counted("GetExecution", "UNAUTHENTICATED"))
        assert (
            value(
                families,
                "agentrun_rpc_requests",
                "agentrun_rpc_requests_total",
                method="GetExecution",
                code="UNAUTHENTICATED",
            )
            == 1
        )
        spans = {s.name: s for s in stack.exporter.get_finished_spans()}
        assert spans["execution traced"].attributes["agentrun.tenant"] == "acme"
    finally:
        await stack.client.close()
        await stack.server.stop(STOP_GRACE)
        await stack.engine.stop(grace=0)
        stack.observability.close()
