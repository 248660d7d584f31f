"""Validation of what an expression may call and where (issue 13, item 8): an unknown CEL
function is a validation error with its field path, on DAG and state machine fields alike; a
`${{ }}` inside `sql.query`'s SQL text is a warning."""

from __future__ import annotations

import textwrap

import pytest

from agentrun.engine import InvalidWorkflow, compile_workflow, load_workflow
from agentrun.integrations import default_agents, default_tools


def _compile(text: str):  # type: ignore[no-untyped-def]
    spec = load_workflow(textwrap.dedent(text))
    return compile_workflow(spec, tools=default_tools(), agents=default_agents())


def _errors(text: str) -> list[str]:
    with pytest.raises(InvalidWorkflow) as info:
        _compile(text)
    return [str(d) for d in info.value.diagnostics]


@pytest.mark.parametrize(
    "call", ["exec('id')", "__import__('os')", "open('/etc/passwd')", "input.x.system()"]
)
def test_unknown_functions_fail_validation_with_the_field_path(call: str) -> None:
    errors = _errors(
        f"""
        name: w
        nodes:
          - {{id: a, pass: {{value: "${{{{ {call} }}}}"}}}}
        """
    )
    name = call.split("(")[0].rsplit(".", 1)[-1]
    assert len(errors) == 1
    assert errors[0].startswith("nodes[0].pass.value: unknown function " + repr(name)), errors


def test_unknown_function_in_a_state_machine_guard_fails_validation() -> None:
    errors = _errors(
        """
        name: m
        mode: state_machine
        initial: a
        states:
          a:
            on:
              GO: {target: b, guard: "${{ exec(event.data.x) }}"}
          b: {final: true}
        """
    )
    assert any(e.startswith("states.a.on.GO") and "unknown function 'exec'" in e for e in errors), (
        errors
    )


def test_the_functions_cel_provides_pass_validation() -> None:
    _compile(
        """
        name: w
        nodes:
          - id: a
            pass:
              value:
                n: "${{ size(input.l) + int('1') + int(double(2)) }}"
                s: "${{ string(1) + string(bytes('x')) + type(1) == 'x' }}"
                b: "${{ input.s.startsWith('a') && input.s.endsWith('b') && input.s.contains('c') && input.s.matches('^a') }}"
                t: "${{ timestamp('2020-01-01T00:00:00Z').getFullYear() + duration('1s').getSeconds() }}"
                m: "${{ input.l.map(x, x * 2).filter(x, x > 1).exists(x, x > 2) && has(input.s) }}"
        """
    )


def test_a_template_in_sql_query_text_is_a_warning_not_an_error() -> None:
    plan = _compile(
        """
        name: w
        nodes:
          - id: q
            tool:
              name: sql.query
              args: {database: main, query: "SELECT * FROM t WHERE id = ${{ input.id }}"}
          - id: ok
            tool:
              name: sql.query
              args: {database: main, query: "SELECT * FROM t WHERE id = :id", params: {id: "${{ input.id }}"}}
        """
    )
    assert [(w.path, "params" in w.message) for w in plan.warnings] == [
        ("nodes[0].tool.args.query", True)
    ]
