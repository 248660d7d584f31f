"""Retry policies: exact delay bounds per backoff and jitter, and the engine honouring them."""

from __future__ import annotations

import itertools
import random

import pytest

from agentrun.engine.retry import Backoff, Jitter, RetrySpec
from agentrun.storage.records import ExecutionState, NodeState


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff.FIXED, [2.0, 2.0, 2.0, 2.0, 2.0]),
        (Backoff.LINEAR, [2.0, 4.0, 6.0, 8.0, 10.0]),
        (Backoff.EXPONENTIAL, [2.0, 6.0, 18.0, 20.0, 20.0]),
    ],
)
def test_base_delays_are_exact_and_capped(backoff, expected) -> None:
    spec = RetrySpec(
        max_attempts=6, backoff=backoff, initial_interval=2.0, max_interval=20.0, multiplier=3.0
    )
    assert [spec.base_delay(n) for n in range(1, 6)] == expected


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [(Jitter.NONE, 1.0, 1.0), (Jitter.FULL, 0.0, 1.0), (Jitter.EQUAL, 0.5, 1.0)],
)
@pytest.mark.parametrize("backoff", list(Backoff))
def test_jitter_stays_within_bounds(jitter, low, high, backoff) -> None:
    spec = RetrySpec(
        max_attempts=10, backoff=backoff, initial_interval=1.0, max_interval=8.0, jitter=jitter
    )
    rng = random.Random(1)
    for attempt in range(1, 8):
        d = spec.base_delay(attempt)
        draws = [spec.delay(attempt, rng) for _ in range(300)]
        assert all(low * d <= x <= high * d for x in draws)
        if jitter is not Jitter.NONE:
            # Spread over the interval, not stuck at one end.
            assert max(draws) - min(draws) > 0.3 * d


def test_retry_rules() -> None:
    spec = RetrySpec(max_attempts=3, non_retryable=frozenset({"payments.declined"}))
    assert spec.allows_retry(1, "tool_error") and spec.allows_retry(2, "timeout")
    assert not spec.allows_retry(3, "tool_error")  # max_attempts counts the first attempt
    assert not spec.allows_retry(1, "payments.declined")
    assert not spec.allows_retry(1, "expression_error")
    assert not spec.allows_retry(1, "cancelled")


async def test_engine_retries_with_the_policy_delays(harness) -> None:
    final, nodes = await harness.run(
        """
name: r
nodes:
  - id: flaky
    retry: {max_attempts: 4, backoff: linear, initial_interval: 20ms, jitter: none}
    tool: {name: core.fail, args: {type: tool_error, succeed_on_attempt: 4}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert nodes["flaky"].attempt == 4
    assert nodes["flaky"].output == {"attempt": 4}
    events = await harness.events(final.id)
    retrying = [e for e in events if e.type == "node.retrying"]
    assert [e.data["delay"] for e in retrying] == pytest.approx([0.02, 0.04, 0.06])
    assert [e.data["error"]["type"] for e in retrying] == ["tool_error"] * 3
    running = [e for e in events if e.type == "node.running"]
    gaps = [b.time - a.time for a, b in itertools.pairwise(running)]
    assert all(g >= d - 0.002 for g, d in zip(gaps, [0.02, 0.04, 0.06]))


async def test_defaults_apply_and_non_retryable_stops_at_once(harness) -> None:
    final, nodes = await harness.run(
        """
name: r
defaults:
  retry: {max_attempts: 3, initial_interval: 1ms, non_retryable: [payments.declined]}
nodes:
  - {id: ok, tool: {name: core.fail, args: {succeed_on_attempt: 3}}}
  - {id: declined, needs: [ok], tool: {name: core.fail, args: {type: payments.declined}}}
"""
    )
    assert nodes["ok"].attempt == 3
    assert nodes["declined"].attempt == 1
    assert nodes["declined"].error["type"] == "payments.declined"
    assert final.state is ExecutionState.FAILED
    assert final.error["node"] == "declined"


async def test_rate_limited_retry_after_is_honoured(harness) -> None:
    final, _nodes = await harness.run(
        """
name: r
nodes:
  - id: api
    retry: {max_attempts: 2, backoff: fixed, initial_interval: 1ms}
    tool: {name: core.fail, args: {type: rate_limited, retry_after: 0.05, succeed_on_attempt: 2}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED
    events = await harness.events(final.id)
    (retrying,) = [e for e in events if e.type == "node.retrying"]
    assert retrying.data["delay"] == pytest.approx(0.05)


async def test_node_timeout_bounds_one_attempt_and_cancels_the_call(harness) -> None:
    final, nodes = await harness.run(
        """
name: t
nodes:
  - id: slow
    timeout: 30ms
    retry: {max_attempts: 2, initial_interval: 1ms}
    tool: {name: core.sleep, args: {seconds: 5}}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["slow"].attempt == 2
    assert nodes["slow"].error["type"] == "timeout"
    # Each attempt was cut at its timeout: one call left to sleep would alone take 5 s.
    assert nodes["slow"].ended_at - nodes["slow"].started_at < 5


async def test_total_timeout_bounds_all_attempts(harness) -> None:
    final, nodes = await harness.run(
        """
name: t
nodes:
  - id: flaky
    total_timeout: 100ms
    retry: {max_attempts: 50, backoff: fixed, initial_interval: 40ms}
    tool: {name: core.fail}
"""
    )
    assert final.state is ExecutionState.FAILED
    assert 2 <= nodes["flaky"].attempt <= 3


async def test_execution_timeout_ends_timed_out(harness) -> None:
    final, nodes = await harness.run(
        """
name: t
timeout: 50ms
nodes:
  - {id: slow, tool: {name: core.sleep, args: {seconds: 5}}}
"""
    )
    assert final.state is ExecutionState.TIMED_OUT
    assert final.error["type"] == "timeout"
    assert nodes["slow"].state is NodeState.CANCELLED
