"""Over gRPC every number is a double (protobuf `Struct`): `input_schema` decides its CEL type
(issue 12, item 4)."""

from __future__ import annotations

import pytest

from agentrun.client import AsyncClient, ExecutionState

pytestmark = pytest.mark.timeout(30)

SPEC = """
name: priced
input_schema:
  type: object
  properties: {price: {type: number}, count: {type: integer}}
nodes:
  - id: a
    pass: {value: {price: "${{ input.price + 0.5 }}", count: "${{ input.count + 1 }}"}}
"""


async def test_a_whole_number_declared_number_is_a_double(client: AsyncClient) -> None:
    await client.create_workflow(source=SPEC)
    execution = await client.start_execution("priced", {"price": 2, "count": 3})
    done = await client.wait(execution, timeout=20)
    assert done.state is ExecutionState.SUCCEEDED, done.error
    assert done.output == {"a": {"price": 2.5, "count": 4}}
