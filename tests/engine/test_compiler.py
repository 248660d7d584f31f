"""Validation and compilation (FORMAT.md, "DAG workflows": every problem, with its field path,
all at once; the plan's parallel stages; vars warnings; irreversible tools never retried)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from agentrun.engine import Diagnostic, InvalidWorkflow, compile_workflow, load_workflow
from agentrun.engine.plan import DagPlan
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.engine.retry import Backoff, RetrySpec
from agentrun.integrations import Registry, default_agents, default_tools
from agentrun.integrations.core_tools import core_tools
from agentrun.v1 import workflow_pb2 as pb

AGENTS = {"mock": {"responses": {"writer": "hello", "classifier": {"category": "order"}}}}


def compile_text(
    text: str,
    *,
    tools: Any = None,
    mutate: Callable[[pb.WorkflowSpec], None] | None = None,
) -> DagPlan:
    spec = load_workflow(textwrap.dedent(text))
    if mutate is not None:
        mutate(spec)
    return compile_workflow(spec, tools=tools or default_tools(), agents=default_agents(AGENTS))


def diagnostics(text: str, **kwargs: Any) -> list[Diagnostic]:
    with pytest.raises(InvalidWorkflow) as info:
        compile_text(text, **kwargs)
    assert info.value.diagnostics, "InvalidWorkflow without diagnostics"
    return info.value.diagnostics


def wf(nodes: str, extra: str = "", name: str = "w") -> str:
    """A workflow named `name` whose nodes are the given YAML list items (one per line)."""
    body = textwrap.indent(textwrap.dedent(nodes).strip(), "  ")
    return f"name: {name}\n{textwrap.dedent(extra).strip()}\nnodes:\n{body}\n"


# --------------------------------------------------------------------------------------------
# One rule per row: (yaml, the exact path, a phrase of the message). Each document breaks exactly
# one rule, so it yields exactly one diagnostic.

LONG = "x" * 4100

SINGLE_PROBLEM = [
    pytest.param(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: a, pass: {value: 2}}
        """),
        "nodes[1].id",
        "duplicate id 'a' (first at nodes[0])",
        id="duplicate-id",
    ),
    pytest.param(
        wf("""
        - {id: alpha, pass: {value: 1}}
        - {id: b, needs: [alpah], pass: {value: 2}}
        """),
        "nodes[1].needs[0]",
        "unknown node 'alpah' (did you mean 'alpha'?)",
        id="unknown-needs",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}\n- {id: b, needs: [a, a], pass: {value: 1}}"),
        "nodes[1].needs[1]",
        "'a' is listed twice",
        id="needs-listed-twice",
    ),
    pytest.param(
        wf("- {id: a, needs: [a], pass: {value: 1}}"),
        "nodes[0].needs[0]",
        "cannot need itself",
        id="needs-itself",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "edges: [{from: ghost, to: a}]"),
        "edges[0].from",
        "unknown node 'ghost'",
        id="unknown-edge-from",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "edges: [{from: a, to: ghost}]"),
        "edges[0].to",
        "unknown node 'ghost'",
        id="unknown-edge-to",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "edges: [{from: a, to: a}]"),
        "edges[0]",
        "cannot connect a node to itself",
        id="edge-self-loop",
    ),
    pytest.param(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: s, needs: [a], switch: {cases: [{when: "${{ true }}", goto: nowhere}], default: a2}}
        - {id: a2, pass: {value: 1}}
        """),
        "nodes[1].switch.cases[0].goto",
        "unknown node 'nowhere'",
        id="unknown-switch-goto",
    ),
    pytest.param(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: s, needs: [a], switch: {cases: [{when: "${{ true }}", goto: b}], default: nope}}
        - {id: b, pass: {value: 1}}
        """),
        "nodes[1].switch.default",
        "unknown node 'nope'",
        id="unknown-switch-default",
    ),
    pytest.param(
        wf("- {id: s, switch: {cases: [{when: 'true', goto: s}]}}"),
        "nodes[0].switch.cases[0].goto",
        "cannot go to itself",
        id="switch-goto-itself",
    ),
    pytest.param(
        wf("- {id: a}"),
        "nodes[0]",
        "needs exactly one kind",
        id="zero-kinds",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}, tool: {name: core.echo}}"),
        "nodes[0]",
        "exactly one kind",
        id="two-kinds",
    ),
    pytest.param(
        wf("- {id: Bad, pass: {value: 1}}"),
        "nodes[0].id",
        "must match [a-z][a-z0-9_]*",
        id="bad-node-id-uppercase",
    ),
    pytest.param(
        wf("- {id: 1st, pass: {value: 1}}"),
        "nodes[0].id",
        "must match [a-z][a-z0-9_]*",
        id="bad-node-id-digit",
    ),
    pytest.param(
        wf(f"- {{id: a{'b' * 63}, pass: {{value: 1}}}}"),
        "nodes[0].id",
        "at most 63",
        id="node-id-too-long",
    ),
    pytest.param(
        wf("- {id: in, pass: {value: 1}}"),
        "nodes[0].id",
        "'in' is a reserved word",
        id="reserved-id-in",
    ),
    pytest.param(
        wf("- {id: 'true', pass: {value: 1}}"),
        "nodes[0].id",
        "'true' is a reserved word",
        id="reserved-id-true",
    ),
    pytest.param(
        wf("- {id: null_, pass: {value: 1}}\n- {id: 'null', pass: {value: 1}}"),
        "nodes[1].id",
        "'null' is a reserved word",
        id="reserved-id-null",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", name="Bad_Name"),
        "name",
        "must be lower-case letters, digits and '-'",
        id="bad-workflow-name",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", name="-leading"),
        "name",
        "must be lower-case letters",
        id="workflow-name-leading-dash",
    ),
    pytest.param(
        "nodes: [{id: a, pass: {value: 1}}]\n",
        "name",
        "is required",
        id="workflow-name-missing",
    ),
    pytest.param(
        "name: w\nnodes: []\n",
        "nodes",
        "at least one node",
        id="no-nodes",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: '${{ 1 + }}'}}"),
        "nodes[0].pass.value",
        "syntax error",
        id="expr-syntax",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: {k: ['${{ input.x }}', '${{ 1 + }}']}}}"),
        "nodes[0].pass.value.k[1]",
        "syntax error",
        id="expr-syntax-nested-path",
    ),
    pytest.param(
        wf("- {id: a, when: '${{ input.x ) }}', pass: {value: 1}}"),
        "nodes[0].when",
        "syntax error",
        id="expr-syntax-when",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: '${{ foo.bar }}'}}"),
        "nodes[0].pass.value",
        "unknown name 'foo'",
        id="expr-unknown-name",
    ),
    pytest.param(
        # `output` is in scope only in a node's output/export/compensate and on its edges.
        wf("- {id: a, pass: {value: '${{ output }}'}}"),
        "nodes[0].pass.value",
        "unknown name 'output'",
        id="expr-output-out-of-scope",
    ),
    pytest.param(
        # `item` exists only inside a map.
        wf("- {id: a, tool: {name: core.echo, args: {x: '${{ item }}'}}}"),
        "nodes[0].tool.args.x",
        "unknown name 'item'",
        id="expr-item-out-of-map",
    ),
    pytest.param(
        wf("""
        - {id: a, pass: {value: '${{ nodes.b.output }}'}}
        - {id: b, pass: {value: 1}}
        """),
        "nodes[0]",
        "node 'b' is not an ancestor of 'a'",
        id="expr-non-ancestor-sibling",
    ),
    pytest.param(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: b, needs: [a], pass: {value: 2}}
        - {id: c, needs: [b], pass: {value: 3}}
        - {id: d, needs: [a], when: '${{ nodes.c.output > 1 }}', pass: {value: 4}}
        """),
        "nodes[3]",
        "node 'c' is not an ancestor of 'd'",
        id="expr-non-ancestor-cousin",
    ),
    pytest.param(
        wf(
            """
        - {id: a, pass: {value: 1}}
        - {id: b, needs: [a], pass: {value: 2}}
        """,
            "edges: [{from: a, to: b, when: '${{ nodes.b.output == 2 }}'}]",
        ),
        "edges[0]",
        "node 'b' is not an ancestor of 'a'",
        id="expr-edge-refers-to-target",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: '${{ nodes.ghost.output }}'}}"),
        "nodes[0]",
        "unknown node 'ghost'",
        id="expr-unknown-node-ref",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "output: '${{ nodes.ghost.output }}'"),
        "output",
        "unknown node 'ghost'",
        id="workflow-output-unknown-node",
    ),
    pytest.param(
        wf('- {id: a, pass: {value: "${{ [1, 2].map(x, [3].filter(y, y > x)) }}"}}'),
        "nodes[0].pass.value",
        "may not be nested",
        id="expr-nested-comprehension",
    ),
    pytest.param(
        wf(f"- {{id: a, pass: {{value: \"${{{{ '{LONG}' }}}}\"}}}}"),
        "nodes[0].pass.value",
        "longer than 4096 bytes",
        id="expr-too-long",
    ),
    pytest.param(
        wf("- {id: a, when: 'yes ${{ true }}', pass: {value: 1}}"),
        "nodes[0].when",
        "single ${{ }} expression",
        id="when-text-around",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 'x ${{ 1 '}}"),
        "nodes[0].pass.value",
        "unclosed ${{",
        id="expr-unclosed",
    ),
    pytest.param(
        wf("- {id: a, tool: {name: core.nope}}"),
        "nodes[0].tool.name",
        "unknown tool 'core.nope'",
        id="unknown-tool",
    ),
    pytest.param(
        wf("- {id: a, agent: {model: mock/echo, prompt: hi, tools: [core.echo, nope.x]}}"),
        "nodes[0].agent.tools[1]",
        "unknown tool 'nope.x'",
        id="unknown-agent-tool",
    ),
    pytest.param(
        wf("- {id: a, agent: {model: acme/gpt, prompt: hi}}"),
        "nodes[0].agent.model",
        "unknown agent provider 'acme'",
        id="unknown-provider",
    ),
    pytest.param(
        wf("- {id: a, agent: {model: mock/nobody, prompt: hi}}"),
        "nodes[0].agent.model",
        "provider 'mock' has no model 'nobody'",
        id="unknown-model",
    ),
    pytest.param(
        wf("- {id: a, agent: {model: mock, prompt: hi}}"),
        "nodes[0].agent.model",
        "must be provider/model",
        id="model-without-slash",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}, timeout: 0s}"),
        "nodes[0].timeout",
        "must be a positive duration",
        id="zero-timeout",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "defaults: {timeout: 0ms}"),
        "defaults.timeout",
        "must be a positive duration",
        id="zero-default-timeout",
    ),
    pytest.param(
        wf("- {id: a, wait: {signal: go, timeout: 0s}}"),
        "nodes[0].wait.timeout",
        "must be a positive duration",
        id="zero-wait-timeout",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "input_schema: {type: objectx}"),
        "input_schema.type",
        "not a valid JSON Schema",
        id="bad-input-schema",
    ),
    pytest.param(
        wf(
            "- {id: a, agent: {model: mock/echo, prompt: hi, output_schema: {type: object, required: 5}}}"
        ),
        "nodes[0].agent.output_schema.required",
        "not a valid JSON Schema",
        id="bad-output-schema",
    ),
    pytest.param(
        wf("- {id: m, map: {node: {pass: {value: 1}}}}"),
        "nodes[0].map.items",
        "is required",
        id="map-without-items",
    ),
    pytest.param(
        wf("- {id: m, map: {items: '${{ [1, 2] }}'}}"),
        "nodes[0].map",
        "exactly one of node or workflow",
        id="map-without-body",
    ),
    pytest.param(
        wf("- {id: m, map: {items: '${{ [1] }}', node: {pass: {value: '${{ output }}'}}}}"),
        "nodes[0].map.node.pass.value",
        "unknown name 'output'",
        id="map-body-scope",
    ),
    pytest.param(
        wf("- {id: w1, wait: {}}"),
        "nodes[0].wait",
        "exactly one of signal, duration or until",
        id="wait-none",
    ),
    pytest.param(
        wf("- {id: w1, wait: {signal: go, duration: 5s}}"),
        "nodes[0].wait",
        "exactly one of signal, duration or until",
        id="wait-signal-and-duration",
    ),
    pytest.param(
        wf("- {id: w1, wait: {duration: 5s, until: '2030-01-01T00:00:00Z'}}"),
        "nodes[0].wait",
        "exactly one of signal, duration or until",
        id="wait-duration-and-until",
    ),
    pytest.param(
        wf("- {id: w1, wait: {signal: go}, timeout: 5s}"),
        "nodes[0].timeout",
        "a wait node takes no timeout (use wait.timeout)",
        id="timeout-on-wait",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}\n- {id: g, needs: [a], aggregate: {strategy: expr}}"),
        "nodes[1].aggregate.expr",
        "is required for strategy expr",
        id="aggregate-expr-missing",
    ),
    pytest.param(
        wf(
            "- {id: a, pass: {value: 1}}\n- {id: g, needs: [a], aggregate: {strategy: merge, expr: 'outputs'}}"
        ),
        "nodes[1].aggregate.expr",
        "only used with strategy expr",
        id="aggregate-expr-without-strategy-expr",
    ),
    pytest.param(
        wf("- {id: g, aggregate: {strategy: concat}}"),
        "nodes[0].aggregate",
        "at least one incoming edge",
        id="aggregate-without-inputs",
    ),
    pytest.param(
        wf("- {id: s, switch: {}}"),
        "nodes[0].switch",
        "at least one case or a default",
        id="switch-empty",
    ),
    pytest.param(
        wf("- {id: s, switch: {cases: [{goto: b}]}}\n- {id: b, pass: {value: 1}}"),
        "nodes[0].switch.cases[0].when",
        "is required",
        id="switch-case-without-when",
    ),
    pytest.param(
        wf("- {id: a, tool: {name: core.sleep, args: {seconds: 'x'}}}"),
        "nodes[0].tool.args.seconds",
        "'x' is not of type 'number'",
        id="constant-args-fail-tool-schema",
    ),
    pytest.param(
        wf("- {id: a, tool: {name: core.sleep, args: {}}}"),
        "nodes[0].tool.args",
        "'seconds' is a required property",
        id="constant-args-missing-required",
    ),
    pytest.param(
        wf(
            "- {id: a, pass: {value: 1}}", "error_handlers: [{match: {nodes: 'a(('}, action: skip}]"
        ),
        "error_handlers[0].match.nodes",
        "bad regex",
        id="handler-bad-regex",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "concurrency: {key: '${{ input.k }}', limit: 0}"),
        "concurrency.limit",
        "at least 1",
        id="concurrency-limit",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}}", "concurrency: {key: '${{ nodes.a.output }}', limit: 1}"),
        "concurrency.key",
        "unknown name 'nodes'",
        id="concurrency-key-scope",
    ),
    pytest.param(
        wf("- {id: a, pass: {value: 1}, retry: {max_attempts: 2, multiplier: 0.5}}"),
        "nodes[0].retry.multiplier",
        "at least 1",
        id="retry-multiplier",
    ),
]


@pytest.mark.parametrize(("text", "path", "phrase"), SINGLE_PROBLEM)
def test_each_rule_is_reported_at_its_path(text: str, path: str, phrase: str) -> None:
    diags = diagnostics(text)
    assert [d.path for d in diags] == [path], diags
    assert phrase in diags[0].message, diags[0]


def test_dynamic_args_are_not_checked_against_the_tool_schema_at_compile_time() -> None:
    plan = compile_text(
        wf("- {id: a, tool: {name: core.sleep, args: {seconds: '${{ input.s }}'}}}")
    )
    assert plan.nodes["a"].step.args.is_constant is False


# --------------------------------------------------------------------------------------------
# Negative durations: the loader refuses `-5s`, but a spec built in code (or sent over gRPC) can
# carry one; the compiler must refuse it too.


def _set(path: str, seconds: int) -> Callable[[pb.WorkflowSpec], None]:
    def mutate(spec: pb.WorkflowSpec) -> None:
        target: Any = spec
        *parents, last = path.split(".")
        for part in parents:
            if part.startswith("nodes["):
                target = target.nodes[int(part[6:-1])]
            else:
                target = getattr(target, part)
        getattr(target, last).seconds = seconds

    return mutate


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nodes[0].timeout", "must be a positive duration"),
        ("nodes[0].total_timeout", "must be a positive duration"),
        ("defaults.timeout", "must be a positive duration"),
        ("nodes[0].retry.initial_interval", "must not be negative"),
        ("nodes[0].retry.max_interval", "must not be negative"),
        ("defaults.retry.initial_interval", "must not be negative"),
    ],
)
def test_negative_durations_from_code_are_refused(path: str, message: str) -> None:
    text = wf("- {id: a, pass: {value: 1}}")
    diags = diagnostics(text, mutate=_set(path, -5))
    assert diags == [Diagnostic(path, message)]


def test_positive_execution_timeout_is_compiled() -> None:
    assert compile_text(wf("- {id: a, pass: {value: 1}}", "timeout: 90s")).timeout == 90


@pytest.mark.parametrize("seconds", [0, -5])
def test_zero_or_negative_execution_timeout_is_refused(seconds: int) -> None:
    text = wf("- {id: a, pass: {value: 1}}", "timeout: 10s")
    diags = diagnostics(text, mutate=_set("timeout", seconds))
    assert diags == [Diagnostic("timeout", "must be a positive duration")]


def test_negative_duration_text_is_refused_by_the_loader() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        load_workflow(wf("- {id: a, pass: {value: 1}, timeout: -5s}"))
    assert [d.path for d in info.value.diagnostics] == ["nodes[0].timeout"]
    assert "negative" in info.value.diagnostics[0].message


def test_negative_wait_duration_from_code_is_refused() -> None:
    text = wf("- {id: w1, wait: {duration: 5s}}")
    diags = diagnostics(text, mutate=_set("nodes[0].wait.duration", -1))
    assert diags == [Diagnostic("nodes[0].wait.duration", "must be a positive duration")]


def test_zero_wait_duration_is_allowed() -> None:
    plan = compile_text(wf("- {id: w1, wait: {duration: 0s}}"))
    assert plan.nodes["w1"].duration == 0


# --------------------------------------------------------------------------------------------
# Cycles and what they make unreachable.


def test_cycle_names_the_nodes_on_it_and_what_follows_is_unreachable() -> None:
    diags = diagnostics(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: b, needs: [a, c], pass: {value: 1}}
        - {id: c, needs: [b], pass: {value: 1}}
        - {id: d, needs: [c], pass: {value: 1}}
        - {id: e, needs: [a], pass: {value: 1}}
        """)
    )
    assert diags == [
        Diagnostic("nodes[1]", "cycle: b -> c -> b"),
        Diagnostic("nodes[3]", "node 'd' is unreachable from any root (it follows a cycle)"),
    ]


def test_two_separate_cycles_are_both_reported() -> None:
    diags = diagnostics(
        wf("""
        - {id: r, pass: {value: 1}}
        - {id: a, needs: [r, b], pass: {value: 1}}
        - {id: b, needs: [a], pass: {value: 1}}
        - {id: x, needs: [z], pass: {value: 1}}
        - {id: y, needs: [x], pass: {value: 1}}
        - {id: z, needs: [y], pass: {value: 1}}
        """)
    )
    assert diags == [
        Diagnostic("nodes[1]", "cycle: a -> b -> a"),
        Diagnostic("nodes[3]", "cycle: x -> y -> z -> x"),
    ]


def test_cycle_through_explicit_edges_and_a_switch() -> None:
    diags = diagnostics(
        wf(
            """
            - {id: s, switch: {cases: [{when: 'true', goto: t}], default: u}}
            - {id: t, pass: {value: 1}}
            - {id: u, pass: {value: 1}}
            """,
            "edges: [{from: t, to: s}]",
        )
    )
    assert diags == [
        Diagnostic("nodes[0]", "cycle: s -> t -> s"),
        Diagnostic("nodes[2]", "node 'u' is unreachable from any root (it follows a cycle)"),
    ]


def test_a_graph_of_only_a_cycle_has_no_root() -> None:
    diags = diagnostics(
        wf("- {id: a, needs: [b], pass: {value: 1}}\n- {id: b, needs: [a], pass: {value: 1}}")
    )
    assert len(diags) == 1
    assert diags[0].path == "nodes[0]"
    assert "cycle" in diags[0].message and "a" in diags[0].message and "b" in diags[0].message


# --------------------------------------------------------------------------------------------
# Every problem at once.


def test_a_document_with_several_problems_reports_all_of_them() -> None:
    text = """\
    name: Not_Valid
    input_schema: {type: 12}
    nodes:
      - {id: a, pass: {value: "${{ 1 + }}"}}
      - {id: a, pass: {value: 2}}
      - {id: in, pass: {value: 3}}
      - {id: b, needs: [ghost], tool: {name: no.such.tool}}
      - {id: c, agent: {model: acme/x, prompt: hi}}
      - {id: d, wait: {signal: s, duration: 1s}, timeout: 5s}
      - {id: e, map: {items: "${{ [1] }}"}}
      - {id: f, switch: {}}
      - {id: g, tool: {name: core.sleep, args: {seconds: x}}}
      - {id: h, pass: {value: "${{ unknown_name }}"}}
    edges:
      - {from: nowhere, to: b}
    """
    diags = diagnostics(text)
    expected = {
        ("name", "must be lower-case"),
        ("input_schema.type", "not a valid JSON Schema"),
        ("nodes[1].id", "duplicate id 'a'"),
        ("nodes[2].id", "reserved word"),
        ("nodes[3].needs[0]", "unknown node 'ghost'"),
        ("edges[0].from", "unknown node 'nowhere'"),
        ("nodes[7].switch", "at least one case or a default"),
        ("nodes[0].pass.value", "syntax error"),
        ("nodes[3].tool.name", "unknown tool 'no.such.tool'"),
        ("nodes[4].agent.model", "unknown agent provider 'acme'"),
        ("nodes[5].timeout", "takes no timeout"),
        ("nodes[5].wait", "exactly one of signal, duration or until"),
        ("nodes[6].map", "exactly one of node or workflow"),
        ("nodes[8].tool.args.seconds", "is not of type 'number'"),
        ("nodes[9].pass.value", "unknown name 'unknown_name'"),
    }
    assert len(diags) == len(expected) == 15, "\n".join(map(str, diags))
    for path, phrase in expected:
        assert any(d.path == path and phrase in d.message for d in diags), (path, phrase, diags)


def test_invalid_workflow_message_lists_every_diagnostic() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        compile_text(wf("- {id: a, tool: {name: x.y}}\n- {id: b, tool: {name: x.z}}"))
    text = str(info.value)
    assert "nodes[0].tool.name: unknown tool 'x.y'" in text
    assert "nodes[1].tool.name: unknown tool 'x.z'" in text


# --------------------------------------------------------------------------------------------
# The plan: stages, order, roots.


def test_diamond_stages() -> None:
    plan = compile_text(
        wf("""
        - {id: a, pass: {value: 1}}
        - {id: b, needs: [a], pass: {value: 2}}
        - {id: c, needs: [a], pass: {value: 3}}
        - {id: d, needs: [b, c], pass: {value: 4}}
        """)
    )
    assert plan.stages == [["a"], ["b", "c"], ["d"]]
    assert plan.roots == ["a"]
    assert plan.order == ["a", "b", "c", "d"]
    assert [n.id for n in plan.nodes.values() if n.sink] == ["d"]


def test_layered_graph_stages_follow_the_longest_path() -> None:
    # r1 -> x -> y -> z ; r1 -> z (shortcut) ; r2 -> y ; lone has no edges ; w via an explicit edge.
    plan = compile_text(
        wf(
            """
            - {id: z, needs: [y, r1], pass: {value: 0}}
            - {id: r1, pass: {value: 0}}
            - {id: x, needs: [r1], pass: {value: 0}}
            - {id: y, needs: [x, r2], pass: {value: 0}}
            - {id: r2, pass: {value: 0}}
            - {id: lone, pass: {value: 0}}
            - {id: w, pass: {value: 0}}
            """,
            "edges: [{from: r2, to: w, when: '${{ output == 0 }}'}]",
        )
    )
    assert plan.stages == [["r1", "r2", "lone"], ["x", "w"], ["y"], ["z"]]
    assert plan.roots == ["r1", "r2", "lone"]
    position = {nid: i for i, nid in enumerate(plan.order)}
    for node in plan.nodes.values():
        for edge in node.incoming:
            assert position[edge.source] < position[edge.target]


def test_switch_targets_get_implied_edges() -> None:
    plan = compile_text(
        wf("""
        - {id: s, switch: {cases: [{when: 'true', goto: t}, {when: 'false', goto: t}], default: u}}
        - {id: t, pass: {value: 1}}
        - {id: u, pass: {value: 2}}
        """)
    )
    assert plan.stages == [["s"], ["t", "u"]]
    edges = [(e.source, e.target, e.from_switch) for e in plan.nodes["s"].outgoing]
    assert edges == [("s", "t", True), ("s", "u", True)]  # t linked once, though named twice


# --------------------------------------------------------------------------------------------
# Warnings: two writers of one vars key with no order between them.


def test_unordered_writers_of_one_export_key_warn() -> None:
    plan = compile_text(
        wf("""
        - {id: a, pass: {value: 1}, export: {k: '${{ output }}', only_a: 1}}
        - {id: b, pass: {value: 2}, export: {k: '${{ output }}'}}
        - {id: c, needs: [a, b], pass: {value: 3}, export: {k: '${{ output }}'}}
        """)
    )
    assert plan.warnings == [
        Diagnostic(
            "nodes[1].export.k",
            "'a' and 'b' both set vars.k with no order between them: the last to finish wins",
        )
    ]


def test_ordered_writers_do_not_warn() -> None:
    plan = compile_text(
        wf("""
        - {id: a, pass: {value: 1}, export: {k: 1}}
        - {id: b, needs: [a], pass: {value: 2}, export: {k: 2}}
        - {id: c, needs: [b], pass: {value: 3}, export: {k: 3}}
        """)
    )
    assert plan.warnings == []


def test_warnings_do_not_make_a_workflow_invalid_but_errors_still_win() -> None:
    text = wf("""
    - {id: a, pass: {value: 1}, export: {k: 1}}
    - {id: b, pass: {value: 2}, export: {k: 2}}
    - {id: c, tool: {name: nope}}
    """)
    diags = diagnostics(text)
    assert [d.path for d in diags] == ["nodes[2].tool.name"]


# --------------------------------------------------------------------------------------------
# Irreversible tools are never retried automatically.


class Charge(Tool):
    name = "payments.charge"
    effect = Effect.IRREVERSIBLE

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return {"id": "ch_1"}


class Lookup(Tool):
    name = "orders.lookup"
    effect = Effect.IDEMPOTENT

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return {}


def _registry() -> Registry:
    return Registry([*core_tools(), Charge(), Lookup()])


def test_irreversible_tool_retry_is_forced_to_one_attempt() -> None:
    plan = compile_text(
        wf(
            """
            - {id: charge, tool: {name: payments.charge}, retry: {max_attempts: 5, backoff: linear, non_retryable: [x]}}
            - {id: charge2, tool: {name: payments.charge}}
            - {id: look, tool: {name: orders.lookup}, retry: {max_attempts: 5}}
            - {id: look2, tool: {name: orders.lookup}}
            """,
            "defaults: {retry: {max_attempts: 4, initial_interval: 2s}}",
        ),
        tools=_registry(),
    )
    charge = plan.nodes["charge"].retry
    assert charge.max_attempts == 1
    assert charge.backoff is Backoff.LINEAR
    assert charge.non_retryable == frozenset({"x"})
    assert not charge.allows_retry(1, "tool_error")
    # Defaults would allow 4 attempts; the irreversible tool still gets one.
    assert plan.nodes["charge2"].retry.max_attempts == 1
    assert plan.nodes["look"].retry.max_attempts == 5
    assert plan.nodes["look2"].retry == RetrySpec(max_attempts=4, initial_interval=2.0)


def test_irreversible_tool_is_unknown_without_its_registry() -> None:
    diags = diagnostics(wf("- {id: charge, tool: {name: payments.charge}}"))
    assert diags[0].path == "nodes[0].tool.name"
    assert "unknown tool 'payments.charge'" in diags[0].message


# --------------------------------------------------------------------------------------------
# References FORMAT.md allows.


def test_ancestors_and_own_input_may_be_referenced() -> None:
    plan = compile_text(
        wf(
            """
            - {id: a, pass: {value: 1}}
            - {id: b, needs: [a], pass: {value: 2}}
            - {id: c, needs: [b], pass: {value: '${{ nodes.a.output + nodes.c.input.x }}'}}
            """,
            "edges: [{from: a, to: c, input: {x: '${{ output }}'}}]",
        )
    )
    assert plan.nodes["c"].node_refs == frozenset({"a", "c"})
    assert plan.nodes["c"].names == frozenset({"nodes"})


def test_a_node_may_not_reference_its_own_output() -> None:
    diags = diagnostics(wf("- {id: a, when: '${{ nodes.a.output == 1 }}', pass: {value: 1}}"))
    assert diags[0].path == "nodes[0]"


def test_a_cycle_does_not_hide_an_unknown_node_reference() -> None:
    diags = diagnostics(
        wf("""
        - {id: r, pass: {value: '${{ nodes.ghost.output }}'}}
        - {id: a, needs: [b], pass: {value: 1}}
        - {id: b, needs: [a], pass: {value: 1}}
        """)
    )
    assert Diagnostic("nodes[1]", "cycle: a -> b -> a") in diags
    assert any(d.path == "nodes[0]" and "unknown node 'ghost'" in d.message for d in diags), diags
