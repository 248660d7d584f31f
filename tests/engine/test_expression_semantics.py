"""Expression semantics the language documents (issue 12, item 4): `execution.attempt` is the
current attempt in a tool's arguments and in `output` transforms; `input_schema` decides the
CEL type of a number (`number` → double, `integer` → int), also for numbers that arrive as
doubles through gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Effect
from agentrun.engine.schema_numbers import coerce_numbers
from agentrun.integrations.registry import FunctionTool
from tests.engine.conftest import Harness


class Flaky:
    """Fails its first two calls, then echoes its arguments."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, args: dict[str, Any], ctx: CallContext) -> Any:
        self.calls.append(args)
        if len(self.calls) < 3:
            raise RuntimeError("not yet")
        return args


FLAKY = Flaky()


@pytest.fixture
def extra_tools() -> list[Any]:
    FLAKY.calls.clear()
    return [FunctionTool(FLAKY, name="test.flaky", effect=Effect.IDEMPOTENT)]


ATTEMPTS = """
name: attempts
nodes:
  - id: a
    retry: {max_attempts: 3, initial_interval: 0.001s}
    tool: {name: test.flaky, args: {attempt: "${{ execution.attempt }}"}}
    output: {seen: "${{ output.attempt }}", now: "${{ execution.attempt }}"}
"""


async def test_execution_attempt_is_the_current_attempt(harness: Harness) -> None:
    final, nodes = await harness.run(ATTEMPTS)
    assert final.state.name == "SUCCEEDED", final.error
    assert [c["attempt"] for c in FLAKY.calls] == [1, 2, 3]
    assert nodes["a"].output == {"seen": 3, "now": 3}


TYPED = """
name: typed
input_schema:
  type: object
  properties:
    price: {type: number}
    count: {type: integer}
    lines: {type: array, items: {type: object, properties: {amount: {type: number}}}}
nodes:
  - id: a
    pass:
      value:
        price: "${{ input.price + 0.5 }}"
        count: "${{ input.count + 1 }}"
        total: "${{ input.lines.map(l, l.amount + 0.0) }}"
"""


@pytest.mark.parametrize(
    "given",
    [
        {"price": 2, "count": 3, "lines": [{"amount": 1}]},  # YAML / JSON: whole numbers are ints
        {"price": 2.0, "count": 3.0, "lines": [{"amount": 1.0}]},  # gRPC: every number is a double
    ],
)
async def test_input_schema_types_numbers_for_cel(harness: Harness, given: dict[str, Any]) -> None:
    final, nodes = await harness.run(TYPED, given)
    assert final.state.name == "SUCCEEDED", final.error
    out = nodes["a"].output
    assert out == {"price": 2.5, "count": 4, "total": [1.0]}
    assert type(out["count"]) is int and type(out["price"]) is float


def test_coercion_follows_the_schema_only() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "number"}, "i": {"type": "integer"}, "b": {"type": "number"}},
        "additionalProperties": {"type": ["number", "string"]},
    }
    got = coerce_numbers({"n": 1, "i": 2.0, "b": True, "x": 3, "untyped": [1]}, schema)
    assert got == {"n": 1.0, "i": 2, "b": True, "x": 3.0, "untyped": [1]}
    assert [type(got[k]) for k in ("n", "i", "x")] == [float, int, float]
    assert type(coerce_numbers(2.5, {"type": "integer"})) is float  # not whole: left to validation
    assert coerce_numbers([1, 2], {"prefixItems": [{"type": "number"}]}) == [1.0, 2]


@pytest.fixture
def mock_responses() -> dict[str, Any]:
    return {"scorer": {"score": 2}}


async def test_an_agents_output_schema_types_its_numbers(harness: Harness) -> None:
    spec = """
name: scored
nodes:
  - id: a
    agent:
      model: mock/scorer
      prompt: score it
      output_schema: {type: object, properties: {score: {type: number}}}
  - {id: b, needs: [a], pass: {value: "${{ nodes.a.output.score + 0.5 }}"}}
"""
    final, nodes = await harness.run(spec)
    assert final.state.name == "SUCCEEDED", final.error
    assert nodes["b"].output == 2.5
