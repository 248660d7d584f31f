"""A bound on what one expression evaluation may cost (issue 13, item 1).

The CEL library runs on the event loop and holds the GIL: `size(input.l.filter(x, x in input.l))`
over 10,000 integers used to block everything for 12.7 s. The cost is now estimated from the
expression's structure and the actual sizes of the values it touches, before it runs; over the
limit, the node fails with `expression_error: cost limit exceeded` and nothing is evaluated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrun.engine import limits
from agentrun.engine.expr_cost import Unparsed, parse
from agentrun.engine.expressions import Expression, ExpressionError, compile_template
from tests.engine.conftest import Harness

QUADRATIC = """
name: quadratic
nodes:
  - id: a
    pass: {value: "${{ size(input.l.filter(x, x in input.l)) }}"}
"""


async def _max_gap_while(task: asyncio.Future[Any]) -> float:
    """The longest the loop went without running this coroutine while `task` ran."""
    loop = asyncio.get_running_loop()
    last, worst = loop.time(), 0.0
    while not task.done():
        await asyncio.sleep(0.005)
        now = loop.time()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_quadratic_expression_over_10000_ints_fails_the_node_without_stalling_the_loop(
    harness: Harness,
) -> None:
    run = asyncio.ensure_future(harness.run(QUADRATIC, {"l": list(range(10_000))}, timeout=60))
    gap = await _max_gap_while(run)
    final, nodes = run.result()
    assert final.state.name == "FAILED"
    assert nodes["a"].error["type"] == "expression_error"
    assert nodes["a"].error["message"].startswith("cost limit exceeded"), nodes["a"].error
    assert nodes["a"].error["details"]["path"] == "nodes[0].pass.value"
    # Generous: evaluating it took 12.7 s; refusing it takes milliseconds.
    assert gap < 5, f"the loop stalled {gap:.2f}s"


async def test_the_same_expression_over_a_small_list_runs(harness: Harness) -> None:
    final, nodes = await harness.run(QUADRATIC, {"l": list(range(50))})
    assert final.state.name == "SUCCEEDED"
    assert nodes["a"].output == 50


@pytest.mark.parametrize(
    ("source", "act"),
    [
        # A map copies its list once per element (the library concatenates).
        ("input.l.map(x, x)", {"input": {"l": list(range(5_000))}}),
        # Each element holds a 50,000-character string: 100 MB of result.
        ("input.l.map(x, input.s)", {"input": {"l": list(range(2_000)), "s": "s" * 50_000}}),
        # Concatenation chains grow quadratically.
        (" + ".join(["input.s"] * 200), {"input": {"s": "s" * 1_000_000}}),
        ("input.s.matches(input.p)", {"input": {"s": "a" * 500_000, "p": "(a|aa)*" * 1000}}),
        # Nothing known about a bound variable but its collection's largest element.
        (
            "input.m.exists(k, input.m[k] in input.l)",
            {"input": {"m": {str(i): i for i in range(3000)}, "l": list(range(3000))}},
        ),
    ],
)
def test_expensive_evaluations_are_refused_before_they_run(
    source: str, act: dict[str, Any]
) -> None:
    with pytest.raises(ExpressionError, match="^p: cost limit exceeded"):
        Expression(source, "p").evaluate(act)


@pytest.mark.parametrize(
    ("source", "act", "expected"),
    [
        ("input.price + 0.5", {"input": {"price": 2.0}}, 2.5),
        (
            "input.items.map(x, x.price * x.qty)",
            {"input": {"items": [{"price": 2, "qty": 3}] * 200}},
            [6] * 200,
        ),
        ("size(input.s + input.s)", {"input": {"s": "s" * 100_000}}, 200_000),
        ("input.l[0] + input['l'][1]", {"input": {"l": [1, 2]}}, 3),
        ("{'a': [1, 2], 'b': input.x ? 1 : 2}.a.exists(y, y == 2)", {"input": {"x": True}}, True),
        ("size(input.l)", {"input": {"l": list(range(10_000))}}, 10_000),
        ("input.l.exists(x, x == 9999)", {"input": {"l": list(range(10_000))}}, True),
    ],
)
def test_ordinary_evaluations_stay_under_the_limit(
    source: str, act: dict[str, Any], expected: Any
) -> None:
    assert Expression(source, "p").evaluate(act) == expected


def test_the_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    expr = Expression("input.l.map(x, x)", "p")
    act = {"input": {"l": list(range(100))}}
    assert len(expr.evaluate(act)) == 100
    monkeypatch.setattr(limits, "_current", limits.DataLimits(expression_cost=1_000))
    with pytest.raises(ExpressionError, match="the limit is 1000"):
        expr.evaluate(act)
    with pytest.raises(ValueError, match="expression_cost"):
        limits.from_mapping({"expression_cost": 0})
    with pytest.raises(ValueError, match="unknown"):
        limits.from_mapping({"expresion_cost": 5})


def test_templates_check_every_expression() -> None:
    t = compile_template({"ok": "${{ 1 }}", "bad": "x ${{ input.l.map(x, input.l) }}"}, "v")
    with pytest.raises(ExpressionError, match="^v.bad: cost limit exceeded"):
        t.evaluate({"input": {"l": list(range(3000))}})


SYNTAX = [
    "a.b[0].c",
    "[1, 2, 3].map(x, x * 2)",
    "{'k': 1}.k",
    "x ? y : z ? 1 : 2",
    "!a || -b < 3 && c in d",
    "has(a.b) && size(a) > 0u",
    "b'bytes' + b\"x\"",
    "r'raw\\d' + '''triple ' quote'''",
    "0x1F + 1e3 + 2.5 + 1u",
    "a.map(x, x > 1, x)",
    "timestamp('2020-01-01T00:00:00Z').getHours()",
    "[1, 2,].size() == 2",
    "{'a': 1,}",
    "a[b[c]]",
    "type(a) == int",
    "// comment\n1 + 1",
    ".a.b",
    "'in' in ['in']",
    "a.all(x, x.in_stock)",
]


@pytest.mark.parametrize("source", SYNTAX)
def test_the_estimator_parses_what_cel_accepts(source: str) -> None:
    import cel

    cel.compile(source)  # valid CEL
    parse(source)  # the estimator knows its syntax (a cruder bound is used otherwise)


def test_unknown_syntax_is_reported_not_guessed() -> None:
    with pytest.raises(Unparsed):
        parse("a.?b")


def test_the_state_machine_fast_path_hands_long_text_to_the_checked_path() -> None:
    from agentrun.engine.machine.fastcel import Fallback, compile_fast

    fast = compile_fast(" + ".join(["data.s"] * 10), frozenset({"data"}))
    assert fast is not None
    assert fast({"data": {"s": "ab"}}) == "ab" * 10
    with pytest.raises(Fallback):
        fast({"data": {"s": "s" * 100_000}})
    # A long chain of comparisons each reading a long string is not "fast": CEL's checked path.
    chain = " && ".join(["data.s == data.t"] * 40)
    assert compile_fast(chain, frozenset({"data"})) is None
