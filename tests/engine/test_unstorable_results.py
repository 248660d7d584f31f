"""A tool that returns what not every store can hold (NaN, infinities, NUL characters) fails
its node with `invalid_output`, on the memory store exactly as on PostgreSQL (where storing it
made the commit fail and left the execution stuck)."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool
from agentrun.storage.records import ExecutionState, NodeState
from tests.engine.conftest import Harness

RESULTS = {
    "nan": {"score": float("nan")},
    "inf": [1, float("inf")],
    "nul": {"text": "a\x00b"},
    "nul-key": {"a\x00": 1},
    "fine": {"score": 0.5, "text": "ok"},
}


class Returns(Tool):
    name = "test.returns"

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return RESULTS[args["kind"]]


@pytest.fixture
def extra_tools() -> list[Any]:
    return [Returns()]


@pytest.mark.parametrize("kind", list(RESULTS))
async def test_tool_results_every_store_can_hold(harness: Harness, kind: str) -> None:
    final, nodes = await harness.run(
        f"""
name: returns-{kind.replace("-", "")}
nodes:
  - id: call
    tool: {{name: test.returns, args: {{kind: {kind}}}}}
    retry: {{max_attempts: 1}}
"""
    )
    if kind == "fine":
        assert final.state is ExecutionState.SUCCEEDED
        assert nodes["call"].output == RESULTS["fine"]
        return
    assert final.state is ExecutionState.FAILED
    assert nodes["call"].state is NodeState.FAILED
    assert nodes["call"].output is None
    assert nodes["call"].error["type"] == "invalid_output"
    assert "cannot be stored" in nodes["call"].error["message"]
