"""Bounds on what a step produces and on inputs (issue 13, item 2).

An oversize value fails its node (`output_too_large`, `input_too_large`) or is refused at the
request, naming its size and the limit, and it is never stored: not in the node, the execution,
the variables or the events."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.engine import InvalidInput, limits
from agentrun.engine.ports import CallContext, Effect, ToolFailure
from agentrun.engine.sizes import MAX_ERROR_BYTES, json_size
from agentrun.integrations.registry import FunctionTool
from tests.engine.conftest import Harness

MB = 1024 * 1024
BIG = "b" * (MB + 10)


async def _big(args: dict[str, Any], ctx: CallContext) -> Any:
    mode = args["mode"]
    if mode == "emit":
        ctx.emit("tool.note", {"blob": "e" * (300 * 1024)})
        ctx.emit("tool.note", {"small": 1})
        return {"ok": True}
    if mode == "fail":
        raise ToolFailure("tool_error", "f" * (2 * MB), details={"blob": "d" * MB})
    return {"blob": "t" * (MB + 10)}


CALLS: list[Any] = []


async def _counting(args: dict[str, Any], ctx: CallContext) -> Any:
    CALLS.append(ctx.attempt)
    return await _big(args, ctx)


@pytest.fixture
def extra_tools() -> list[Any]:
    CALLS.clear()
    return [FunctionTool(_counting, name="test.big", effect=Effect.IDEMPOTENT)]


async def _stored_text(harness: Harness, execution_id: str) -> str:
    record = await harness.engine.get_execution(execution_id)
    nodes = await harness.engine.get_nodes(execution_id)
    events = await harness.events(execution_id)
    return repr(record) + repr(nodes) + repr(events)


def _assert_small(text: str) -> None:
    assert len(text) < MB, f"{len(text)} characters stored"


async def test_an_oversize_pass_output_fails_the_node_and_is_not_stored(harness: Harness) -> None:
    spec = "name: grow\nnodes:\n  - {id: a, pass: {value: '${{ input.s + input.s }}'}}\n"
    final, nodes = await harness.run(spec, {"s": "s" * 600_000})
    assert final.state.name == "FAILED"
    err = nodes["a"].error
    assert err["type"] == "output_too_large"
    assert "1200002 bytes; the limit is 1048576 bytes" in err["message"], err
    assert err["details"] == {"size": 1_200_002, "limit": MB}
    assert nodes["a"].output is None
    text = await _stored_text(harness, final.id)
    assert "s" * 700_000 not in text


async def test_an_oversize_tool_output_fails_without_a_retry(harness: Harness) -> None:
    spec = (
        "name: t\nnodes:\n  - id: a\n    retry: {max_attempts: 3, initial_interval: 0.001s}\n"
        "    tool: {name: test.big, args: {mode: output}}\n"
    )
    final, nodes = await harness.run(spec)
    assert nodes["a"].error["type"] == "output_too_large"
    assert CALLS == [1]
    _assert_small(await _stored_text(harness, final.id))


async def test_an_output_transform_exports_and_the_execution_output_are_measured(
    harness: Harness,
) -> None:
    grown = "name: o\nnodes:\n  - {id: a, pass: {value: 1}, output: '${{ input.s + input.s }}'}\n"
    final, nodes = await harness.run(grown, {"s": "s" * 600_000})
    assert nodes["a"].error["type"] == "output_too_large"
    exports = (
        "name: v\nnodes:\n  - {id: a, pass: {value: 1}, export: {x: '${{ input.s }}'}}\n"
        "  - {id: b, needs: [a], pass: {value: 1}, export: {y: '${{ input.s }}'}}\n"
    )
    final, nodes = await harness.run(exports, {"s": "s" * 600_000})
    assert nodes["a"].state.name == "SUCCEEDED"
    assert nodes["b"].error["type"] == "output_too_large"
    assert "variables" in nodes["b"].error["message"]
    assert set(final.vars) == {"x"}
    whole = (
        "name: w\nnodes:\n  - {id: a, pass: {value: '${{ input.s }}'}}\n"
        "  - {id: b, pass: {value: '${{ input.s }}'}}\n"
        "output: {a: '${{ nodes.a.output }}', b: '${{ nodes.b.output }}'}\n"
    )
    final, _ = await harness.run(whole, {"s": "s" * 600_000})
    assert final.state.name == "FAILED"
    assert final.error["type"] == "output_too_large" and final.output is None


async def test_map_items_add_up(harness: Harness) -> None:
    spec = (
        "name: m\nnodes:\n  - id: m\n    map:\n      items: '${{ [1, 2] }}'\n"
        "      node: {pass: {value: '${{ input.s }}'}}\n"
    )
    _final, nodes = await harness.run(spec, {"s": "s" * 600_000})
    assert nodes["m"].error["type"] == "output_too_large"
    assert nodes["m"].output is None  # each item's output fits; their list does not


async def test_an_oversize_edge_input_fails_the_node(harness: Harness) -> None:
    spec = (
        "name: e\nnodes:\n  - {id: a, pass: {value: 1}}\n  - {id: b, pass: {value: 2}}\n"
        "edges:\n  - {from: a, to: b, input: {x: '${{ input.s + input.s }}'}}\n"
    )
    _final, nodes = await harness.run(spec, {"s": "s" * 600_000})
    assert nodes["b"].error["type"] == "input_too_large"
    assert nodes["b"].input is None


async def test_oversize_inputs_and_signal_data_are_refused(harness: Harness) -> None:
    await harness.start("name: hold\nnodes:\n  - {id: w, wait: {signal: go}}\n")
    with pytest.raises(InvalidInput) as info:
        await harness.engine.start_execution("hold", {"s": BIG})
    assert str(info.value.diagnostics[0]).startswith("input: is ")
    assert "data_limits.input_bytes" in str(info.value.diagnostics[0])
    waiting = await harness.engine.start_execution("hold", {})
    with pytest.raises(InvalidInput, match="data_limits.signal_bytes"):
        await harness.engine.signal(waiting.id, "go", {"s": BIG})
    await harness.engine.signal(waiting.id, "go", {"s": "small"})
    assert (await harness.engine.wait(waiting.id, timeout=10)).state.name == "SUCCEEDED"


async def test_an_oversize_emitted_event_is_replaced_by_a_note(harness: Harness) -> None:
    final, _ = await harness.run(
        "name: n\nnodes:\n  - {id: a, tool: {name: test.big, args: {mode: emit}}}\n"
    )
    assert final.state.name == "SUCCEEDED"
    notes = [e.data for e in await harness.events(final.id) if e.type == "tool.note"]
    assert notes[0]["error"] == "event_too_large" and notes[0]["limit"] == 256 * 1024
    assert notes[1] == {"small": 1}


async def test_a_huge_tool_error_is_cut(harness: Harness) -> None:
    final, nodes = await harness.run(
        "name: f\nnodes:\n  - {id: a, tool: {name: test.big, args: {mode: fail}}}\n"
    )
    err = nodes["a"].error
    assert err["type"] == "tool_error" and err["details"] == {"truncated": True}
    assert json_size(err, 10 * MB) <= MAX_ERROR_BYTES
    _assert_small(await _stored_text(harness, final.id))


async def test_limits_are_configurable(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_current", limits.DataLimits(output_bytes=100))
    _final, nodes = await harness.run(
        "name: c\nnodes:\n  - {id: a, pass: {value: '${{ input.s }}'}}\n", {"s": "x" * 200}
    )
    assert nodes["a"].error["type"] == "output_too_large"
    assert "the limit is 100 bytes" in nodes["a"].error["message"]


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -12, 1.5, "", "héllo ✓", [], {}, [1, "a", None], {"k": [1, {"z": "é"}]}],
)
def test_json_size_is_the_compact_json_size(value: Any) -> None:
    import json

    exact = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    assert json_size(value, 10**9) == exact


@pytest.mark.parametrize(
    "value",
    [
        list(range(1000)),
        {str(i): [i, "é"] for i in range(500)},
        [{"k": "v" * i} for i in range(200)],
    ],
)
def test_json_size_is_exact_for_large_collections_too(value: Any) -> None:
    import json

    exact = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    assert json_size(value, 10**9) == exact


def test_json_size_stops_past_the_limit_and_survives_deep_nesting() -> None:
    assert json_size(["s" * 50_000] * 2_000, MB) > MB
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    assert json_size(deep, 10**9) == 10_002
