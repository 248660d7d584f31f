"""CEL expressions and `${{ }}` templates (FORMAT.md, "Expressions")."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from agentrun.engine.compiler import value_to_py
from agentrun.engine.expressions import (
    MAX_COLLECTION,
    MAX_SOURCE_BYTES,
    Expression,
    ExpressionError,
    compile_bool,
    compile_template,
    compile_template_collect,
    normalize_numbers,
    to_text,
)

INPUT = {"n": 3, "s": "text", "xs": [1, 2, 3], "obj": {"k": "v", "n": 1.5}, "none": None, "t": True}


def ev(template: Any, input: Any = INPUT, **names: Any) -> Any:
    return compile_template(template, "p").evaluate({"input": input, **names})


# --------------------------------------------------------------------------------------------
# Templates: typed values, interpolation, structure.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{ input.n }}", 3),
        ("${{ input.n + 1 }}", 4),
        ("${{input.n*2}}", 6),  # no spaces inside the braces
        ("  ${{ input.n }}  ", "  3  "),  # text around it (even blanks) interpolates
        ("${{ input.s }}", "text"),
        ("${{ input.xs }}", [1, 2, 3]),
        ("${{ input.obj }}", {"k": "v", "n": 1.5}),
        ("${{ input.none }}", None),
        ("${{ input.t }}", True),
        ("${{ input.n > 2 }}", True),
        ("${{ 1.5 }}", 1.5),
        ("${{ {'a': [1, 'x']} }}", {"a": [1, "x"]}),
    ],
)
def test_exactly_one_expression_yields_its_typed_value(text: str, expected: Any) -> None:
    value = ev(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n=${{ input.n }}", "n=3"),
        ("${{ input.s }}!", "text!"),
        ("${{ input.n }}${{ input.n }}", "33"),  # two expressions: a string, not a number
        ("xs=${{ input.xs }}", "xs=[1,2,3]"),
        ("o=${{ input.obj }}", 'o={"k":"v","n":1.5}'),
        ("none=[${{ input.none }}]", "none=[]"),
        ("t=${{ input.t }}", "t=true"),
        ("q=${{ input.s + '\"' }}", 'q=text"'),  # strings go in raw, not as JSON text
        ("u=${{ 'é✓' }}", "u=é✓"),  # no ASCII escaping
        ("f=${{ 0.5 }}", "f=0.5"),
    ],
)
def test_interpolation_writes_json_text_and_null_as_empty(text: str, expected: str) -> None:
    assert ev(text) == expected


def test_to_text_directly() -> None:
    assert to_text(None) == ""
    assert to_text("a") == "a"
    assert to_text({"b": [1, None, False]}) == '{"b":[1,null,false]}'


def test_a_string_without_expressions_is_a_constant() -> None:
    t = compile_template("plain ${ not } {{ an }} expression", "p")
    assert t.is_constant
    assert t.evaluate({}) == "plain ${ not } {{ an }} expression"
    assert t.names == frozenset() and t.node_refs == frozenset()


def test_dicts_and_lists_keep_key_order_and_constants() -> None:
    template = {
        "z": "${{ input.n }}",
        "a": 1,
        "m": ["k", "${{ input.n + 1 }}", {"deep": "${{ input.s }}", "c": None}],
        "b": {"const": [1, 2]},
        "y": "lit",
    }
    t = compile_template(template, "p")
    assert not t.is_constant
    value = t.evaluate({"input": INPUT})
    assert value == {
        "z": 3,
        "a": 1,
        "m": ["k", 4, {"deep": "text", "c": None}],
        "b": {"const": [1, 2]},
        "y": "lit",
    }
    assert list(value) == ["z", "a", "m", "b", "y"]
    assert list(value["m"][2]) == ["deep", "c"]
    # Each evaluation builds fresh containers around the shared constants.
    again = t.evaluate({"input": {**INPUT, "n": 10}})
    assert again["z"] == 10 and value["z"] == 3


def test_a_constant_structure_is_returned_as_is() -> None:
    value = {"a": [1, {"b": "c"}], "d": None}
    t = compile_template(value, "p")
    assert t.is_constant
    assert t.constant == value
    assert t.evaluate({}) == value


def test_non_string_scalars_are_constants() -> None:
    for value in (1, 2.5, True, None):
        t = compile_template(value, "p")
        assert t.is_constant and t.evaluate({}) == value


# --------------------------------------------------------------------------------------------
# Names and node references.


@pytest.mark.parametrize(
    ("source", "names", "refs"),
    [
        ("input.n + 1", {"input"}, set()),
        ("nodes.a.output.x + nodes.b_2.state", {"nodes"}, {"a", "b_2"}),
        ("nodes . a . output", {"nodes"}, {"a"}),
        ("vars.k == execution.id", {"vars", "execution"}, set()),
        ("input.xs.map(x, x * 2)", {"input"}, set()),
        ("input.xs.filter(e, e > input.n)", {"input"}, set()),
        ("input.xs.all(v, v > 0) && input.xs.exists(w, w == 2)", {"input"}, set()),
        ("input.xs.exists_one(q, q == 1)", {"input"}, set()),
        ("nodes.a.output.map(x, x + nodes.b.output)", {"nodes"}, {"a", "b"}),
        ("'nodes.x.output'", set(), set()),
        ('"nodes.y" + string(nodes.z.output)', {"nodes"}, {"z"}),
        ("'''nodes.q''' == input.s", {"input"}, set()),
        ("1 + 2", set(), set()),
    ],
)
def test_names_and_node_refs(source: str, names: set[str], refs: set[str]) -> None:
    e = Expression(source, "p")
    assert e.names == frozenset(names)
    assert e.node_refs == frozenset(refs)


def test_template_names_and_refs_are_the_union_over_its_expressions() -> None:
    t = compile_template(
        {
            "a": "${{ input.n }}",
            "b": ["x ${{ nodes.one.output }} y", "nodes.two.output"],
            "c": "${{ vars.k }}",
        },
        "p",
    )
    assert t.names == frozenset({"input", "nodes", "vars"})
    assert t.node_refs == frozenset({"one"})  # "nodes.two.output" is plain text
    assert [e.source for e in t.expressions] == ["input.n", "nodes.one.output", "vars.k"]


def test_comprehension_variables_are_not_unknown_names() -> None:
    allowed = frozenset({"input"})
    e = Expression("input.xs.map(item_value, item_value + 1)", "p", allowed)
    assert e.names == frozenset({"input"})
    assert e.evaluate({"input": {"xs": [1, 2]}}) == [2, 3]
    with pytest.raises(ExpressionError) as info:
        Expression("input.xs.map(v, w)", "nodes[1].pass.value", allowed)
    assert info.value.path == "nodes[1].pass.value"
    assert "unknown name 'w'" in info.value.message


def test_unknown_top_level_name_lists_what_is_in_scope() -> None:
    with pytest.raises(ExpressionError) as info:
        Expression("inputs.n", "nodes[0].when", frozenset({"input", "vars"}))
    assert info.value.path == "nodes[0].when"
    assert info.value.message == "unknown name 'inputs'; names in scope here: input, vars"


def test_nodes_must_be_referenced_by_id() -> None:
    with pytest.raises(ExpressionError) as info:
        Expression("nodes['a'].output", "p")
    assert "nodes.ID.output" in info.value.message
    with pytest.raises(ExpressionError):
        Expression("size(nodes)", "p")


# --------------------------------------------------------------------------------------------
# Compile-time bounds.


def test_source_size_limit() -> None:
    at_limit = "'" + "a" * (MAX_SOURCE_BYTES - 2) + "'"
    assert len(at_limit.encode()) == MAX_SOURCE_BYTES
    assert Expression(at_limit, "p").evaluate({}) == "a" * (MAX_SOURCE_BYTES - 2)
    over = "'" + "a" * (MAX_SOURCE_BYTES - 1) + "'"
    with pytest.raises(ExpressionError) as info:
        Expression(over, "nodes[3].pass.value")
    assert info.value.path == "nodes[3].pass.value"
    assert "longer than 4096 bytes" in info.value.message


def test_source_size_is_counted_in_bytes_not_characters() -> None:
    source = "'" + "é" * 2100 + "'"  # 2102 characters, 4202 bytes
    with pytest.raises(ExpressionError, match="longer than"):
        Expression(source, "p")


@pytest.mark.parametrize(
    "source",
    [
        "input.xs.map(x, input.xs.filter(y, y > x))",
        "input.xs.all(x, [x].exists(y, y == 1))",
        "input.xs.map(x, size(input.xs.map(y, y)))",
    ],
)
def test_nested_comprehensions_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        Expression(source, "nodes[0].output")
    assert info.value.path == "nodes[0].output"
    assert "may not be nested" in info.value.message


@pytest.mark.parametrize(
    "source",
    [
        "input.xs.map(x, x) + input.xs.filter(y, y > 1)",  # side by side, not nested
        "input.xs.map(x, x).filter(y, y > 1)",  # chained
        "input.xs.map(x, '.map(')",  # the macro name inside a string
    ],
)
def test_sequential_comprehensions_are_allowed(source: str) -> None:
    Expression(source, "p")


@pytest.mark.parametrize("source", ["", "   ", "1 +", "input.", "(1", "a b"])
def test_syntax_errors_and_empty_expressions(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        Expression(source, "edges[0].when")
    assert info.value.path == "edges[0].when"


def test_template_collects_every_bad_expression_with_its_path() -> None:
    errors: list[ExpressionError] = []
    t = compile_template_collect(
        {"a": {"b": ["${{ 1 + }}", "${{ zz }}"]}, "c": "ok ${{ input.n }}"},
        "root",
        frozenset({"input"}),
        errors,
    )
    assert [(e.path, e.message.split(":")[0]) for e in errors] == [
        ("root.a.b[0]", "syntax error"),
        ("root.a.b[1]", "unknown name 'zz'; names in scope here"),
    ]
    assert t.names == frozenset({"input"})
    with pytest.raises(ExpressionError) as info:
        compile_template({"a": {"b": ["${{ 1 + }}", "${{ zz }}"]}}, "root", frozenset({"input"}))
    assert info.value.path == "root.a.b[0]"


def test_compile_bool_accepts_bare_or_wrapped_expressions() -> None:
    assert compile_bool("${{ input.n == 3 }}", "w").evaluate({"input": INPUT}) is True
    assert compile_bool("  input.n == 4  ", "w").evaluate({"input": INPUT}) is False
    with pytest.raises(ExpressionError) as info:
        compile_bool("if ${{ true }}", "nodes[0].when")
    assert info.value.path == "nodes[0].when"


# --------------------------------------------------------------------------------------------
# Run-time errors carry the path.


@pytest.mark.parametrize(
    ("source", "input", "phrase"),
    [
        ("input.missing", {}, "no such key"),
        ("input.obj.nope", {"obj": {}}, "no such key"),
        ("input.s + 1", {"s": "a"}, ""),
        ("input.n * 'x'", {"n": 2}, ""),
        ("int(input.s)", {"s": "abc"}, ""),
        ("input.n + 9223372036854775807", {"n": 1}, "overflow"),
        ("input.s.matches('(')", {"s": "a"}, ""),
    ],
)
def test_runtime_errors_raise_expression_error_with_the_path(
    source: str, input: Any, phrase: str
) -> None:
    e = Expression(source, "nodes[4].tool.args.url")
    with pytest.raises(ExpressionError) as info:
        e.evaluate({"input": input})
    assert info.value.path == "nodes[4].tool.args.url"
    assert phrase in info.value.message
    assert str(info.value).startswith("nodes[4].tool.args.url: ")


@pytest.mark.parametrize(
    ("source", "input"),
    [
        ("input.xs[5]", {"xs": [1]}),
        ("input.xs[-1]", {"xs": [1]}),
        ("1 / input.n", {"n": 0}),
        ("input.n % 0", {"n": 1}),
    ],
)
def test_index_and_division_errors_are_expression_errors(source: str, input: Any) -> None:
    # The cel library raises IndexError / ZeroDivisionError for these; they must not escape as
    # anything but an ExpressionError (an inline node would otherwise stop the execution loop).
    e = Expression(source, "nodes[0].pass.value")
    with pytest.raises(ExpressionError) as info:
        e.evaluate({"input": input})
    assert info.value.path == "nodes[0].pass.value"


def test_runtime_error_inside_interpolation_keeps_the_field_path() -> None:
    t = compile_template({"args": {"url": "https://x/${{ input.id }}"}}, "nodes[1].tool")
    with pytest.raises(ExpressionError) as info:
        t.evaluate({"input": {}})
    assert info.value.path == "nodes[1].tool.args.url"
    assert "no such key" in info.value.message


def test_has_guards_a_missing_key() -> None:
    e = Expression("has(input.opt) ? input.opt : 'default'", "p")
    assert e.evaluate({"input": {}}) == "default"
    assert e.evaluate({"input": {"opt": "set"}}) == "set"


# --------------------------------------------------------------------------------------------
# Collections larger than the limit are refused before a comprehension walks them.


def test_comprehension_over_a_too_large_collection_is_refused() -> None:
    # `exists` stops at the first element, so the check at the limit stays cheap.
    e = Expression("input.xs.exists(x, x == 0)", "nodes[2].map.items")
    assert e.evaluate({"input": {"xs": list(range(MAX_COLLECTION))}}) is True
    with pytest.raises(ExpressionError) as info:
        e.evaluate({"input": {"xs": list(range(MAX_COLLECTION + 1))}})
    assert info.value.path == "nodes[2].map.items"
    assert "10001 elements; the limit is 10000" in info.value.message


def test_nested_too_large_collection_is_refused() -> None:
    e = Expression("input.a.b.exists(x, x == 1)", "p")
    big = {"a": {"b": [0] * (MAX_COLLECTION + 5)}}
    with pytest.raises(ExpressionError, match="the limit is 10000"):
        e.evaluate({"input": big})


def test_too_large_map_is_refused_too() -> None:
    e = Expression("input.m.all(k, k != '')", "p")
    with pytest.raises(ExpressionError, match="the limit is 10000"):
        e.evaluate({"input": {"m": {str(i): i for i in range(MAX_COLLECTION + 1)}}})


def test_large_collection_without_a_comprehension_is_fine() -> None:
    e = Expression("size(input.xs)", "p")
    assert e.evaluate({"input": {"xs": list(range(MAX_COLLECTION * 2))}}) == MAX_COLLECTION * 2


# --------------------------------------------------------------------------------------------
# Numbers: integral floats become ints.


def test_normalize_numbers() -> None:
    value = {
        "a": 1.0,
        "b": [2.5, 3.0, {"c": -4.0}],
        "d": True,
        "e": "5.0",
        "f": None,
        "g": 7,
        "h": 0.0,
    }
    out = normalize_numbers(value)
    assert out == {
        "a": 1,
        "b": [2.5, 3, {"c": -4}],
        "d": True,
        "e": "5.0",
        "f": None,
        "g": 7,
        "h": 0,
    }
    assert type(out["a"]) is int and type(out["b"][1]) is int and type(out["b"][2]["c"]) is int
    assert type(out["b"][0]) is float
    assert out["d"] is True
    assert list(out) == list(value)
    # Beyond 2**53 a float is not an exact integer any more: it stays a float.
    assert type(normalize_numbers(2.0**60)) is float


def test_value_to_py_turns_integral_numbers_into_ints() -> None:
    v = struct_pb2.Value()
    v.struct_value.update({"i": 3, "f": 1.5, "l": [2, 3.0, 4.25], "s": "9", "b": False, "n": None})
    out = value_to_py(v)
    assert out == {"i": 3, "f": 1.5, "l": [2, 3, 4.25], "s": "9", "b": False, "n": None}
    assert type(out["i"]) is int
    assert [type(x) for x in out["l"]] == [int, int, float]
    assert out["b"] is False


def test_ints_from_a_struct_work_in_int_arithmetic() -> None:
    v = struct_pb2.Value()
    v.struct_value.update({"count": 41})
    data = value_to_py(v)
    assert Expression("input.count + 1", "p").evaluate({"input": data}) == 42
    # A double only mixes with ints through double().
    with pytest.raises(ExpressionError):
        Expression("input.count + 1", "p").evaluate({"input": {"count": 41.5}})
    assert Expression("input.count + double(1)", "p").evaluate({"input": {"count": 41.5}}) == 42.5


# --------------------------------------------------------------------------------------------
# Through the engine: run-time expression errors fail the node with `expression_error` and the
# field path; interpolation and numbers as FORMAT.md says.


async def test_missing_key_at_run_time_fails_the_execution_with_the_path(harness: Any) -> None:
    final, nodes = await harness.run(
        """
        name: missing-key
        nodes:
          - {id: a, pass: {value: 1}}
          - {id: b, needs: [a], pass: {value: {deep: ["${{ input.nope }}"]}}, retry: {max_attempts: 3}}
        """,
        {},
    )
    assert final.state.value == "FAILED"
    assert final.error["type"] == "expression_error"
    assert final.error["node"] == "b"
    assert final.error["details"]["path"] == "nodes[1].pass.value.deep[0]"
    assert nodes["b"].state.value == "FAILED"
    assert nodes["b"].attempt == 1  # expression errors are never retried


async def test_interpolation_and_typed_values_end_to_end(harness: Any) -> None:
    final, nodes = await harness.run(
        """
        name: interp
        nodes:
          - id: a
            pass:
              value:
                typed: "${{ input.count + 1 }}"
                text: "n=${{ input.count }} none=${{ input.none }} list=${{ input.xs }}"
                keep: [1, "two", null]
        """,
        {"count": 41, "none": None, "xs": [1, "b"]},
    )
    assert final.state.value == "SUCCEEDED"
    out = nodes["a"].output
    assert out["typed"] == 42 and type(out["typed"]) is int
    assert out["text"] == 'n=41 none= list=[1,"b"]'
    assert out["keep"] == [1, "two", None]


async def test_when_must_yield_a_bool(harness: Any) -> None:
    final, _ = await harness.run(
        """
        name: when-bool
        nodes:
          - {id: a, when: "${{ input.n }}", pass: {value: 1}}
        """,
        {"n": 1},
    )
    assert final.state.value == "FAILED"
    assert final.error["type"] == "expression_error"
    assert final.error["details"]["path"] == "nodes[0].when"
    assert "bool" in final.error["message"]


async def test_division_by_zero_fails_the_execution(harness: Any) -> None:
    final, _ = await harness.run(
        """
        name: div-zero
        nodes:
          - {id: a, pass: {value: "${{ 1 / input.n }}"}}
        """,
        {"n": 0},
        timeout=5,
    )
    assert final.state.value == "FAILED"
    assert final.error["type"] == "expression_error"
    assert final.error["details"]["path"] == "nodes[0].pass.value"


# --------------------------------------------------------------------------------------------
# Each distinct text is compiled once; what depends on where it is written is checked each time.


def test_a_text_is_compiled_once_and_each_use_keeps_its_own_path_and_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentrun.engine import expressions

    compiled: list[str] = []
    real = expressions.cel.compile

    def counting(source: str) -> Any:
        compiled.append(source)
        return real(source)

    monkeypatch.setattr(expressions.cel, "compile", counting)
    text = "input.once_per_text_7f3 + 1"  # a text no other test compiles
    a = Expression(text, "nodes[0].when", frozenset({"input"}))
    b = Expression(text, "nodes[1].when", frozenset({"input"}))
    assert compiled == [text]
    assert (a.path, b.path) == ("nodes[0].when", "nodes[1].when")
    assert a.evaluate({"input": {"once_per_text_7f3": 1}}) == 2
    assert b.evaluate({"input": {"once_per_text_7f3": 2}}) == 3
    with pytest.raises(ExpressionError) as info:
        Expression(text, "nodes[2].when", frozenset({"vars"}))
    assert (info.value.path, info.value.message) == (
        "nodes[2].when",
        "unknown name 'input'; names in scope here: vars",
    )
    for path in ("edges[0].when", "edges[1].when"):
        with pytest.raises(ExpressionError) as info:
            Expression("input.once_per_text_7f3 +", path)
        assert info.value.path == path and info.value.message.startswith("syntax error")
        with pytest.raises(ExpressionError) as info:
            Expression("nodes[input.once_per_text_7f3].output", path, frozenset({"input", "nodes"}))
        assert (info.value.path, info.value.message) == (
            path,
            "refer to a node by its id: nodes.ID.output",
        )
    assert compiled == [text, "input.once_per_text_7f3 +", "nodes[input.once_per_text_7f3].output"]
