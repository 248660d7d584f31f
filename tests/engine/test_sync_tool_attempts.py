"""A synchronous tool's attempt runs without `invoke_step`'s coroutines (`calls.attempt_now`);
its outcomes are the same as the same tool's run in a task of its own."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Tool, ToolFailure
from agentrun.storage.records import ExecutionState


class _Probe(Tool):
    """Does what its args say; `seen` keeps the labels and attempt each call was given."""

    args_schema = {"type": "object", "properties": {"do": {"type": "string"}}}
    result_schema = {"type": "object", "required": ["ok"]}

    def __init__(self, name: str, synchronous: bool) -> None:
        self.name = name
        self.synchronous = synchronous
        self.seen: list[tuple[dict[str, str], int, str]] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.seen.append((dict(ctx.labels), ctx.attempt, ctx.node_id))
        match args.get("do"):
            case "fail":
                raise ToolFailure("t.declined", "no", retry_after=2.5, retryable=False)
            case "bug":
                raise ValueError("oops")
            case "nan":
                return {"ok": float("nan")}
            case "bad":
                return {"not_ok": 1}
        return {"ok": args}


_SYNC, _TASK = _Probe("t.sync", True), _Probe("t.task", False)

_NODES = """
error_handlers:
  - {match: {errors: ["*"]}, action: skip}
nodes:
  - {id: ok, tool: {name: TOOL, args: {do: ok}, labels: {region: eu}}}
  - {id: args, tool: {name: TOOL, args: {do: "${{ input.three }}"}}}
  - {id: fail, tool: {name: TOOL, args: {do: fail}}}
  - {id: bug, tool: {name: TOOL, args: {do: bug}}, retry: {max_attempts: 1}}
  - {id: nan, tool: {name: TOOL, args: {do: nan}}, retry: {max_attempts: 1}}
  - {id: bad, tool: {name: TOOL, args: {do: bad}}, retry: {max_attempts: 1}}
  - {id: expr, tool: {name: TOOL, args: {do: "${{ input.none.x }}"}}, retry: {max_attempts: 1}}
"""


async def _outcomes(harness: Any, tool: _Probe) -> dict[str, Any]:
    tool.seen.clear()
    spec = f"name: {tool.name.replace('.', '-')}\n" + _NODES.replace("TOOL", tool.name)
    final, nodes = await harness.run(spec, {"three": 3, "none": None})
    assert final.state is ExecutionState.SUCCEEDED, final.error
    return {nid: (n.state, n.attempt, n.output, n.error) for nid, n in nodes.items()}


@pytest.mark.parametrize("extra_tools", [[_SYNC, _TASK]])
async def test_a_synchronous_tools_outcomes_are_a_tasks(harness) -> None:
    sync, task = await _outcomes(harness, _SYNC), await _outcomes(harness, _TASK)
    assert repr(sync).replace("t.sync", "T") == repr(task).replace("t.task", "T")
    assert sync["ok"][2] == {"ok": {"do": "ok"}}
    assert sync["args"][3]["type"] == "invalid_args"
    assert sync["fail"][3] == {
        "type": "t.declined",
        "message": "no",
        "details": {},
        "retry_after": 2.5,
        "retryable": False,
    }
    assert sync["bug"][3]["type"] == "internal"
    assert sync["nan"][3]["type"] == "invalid_output"
    assert sync["bad"][3]["type"] == "invalid_output"
    assert sync["expr"][3]["type"] == "expression_error"
    assert sorted(_SYNC.seen, key=str) == sorted(_TASK.seen, key=str)
    assert ({"region": "eu"}, 1, "ok") in _SYNC.seen
