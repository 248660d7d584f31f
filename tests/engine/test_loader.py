import json
import textwrap

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.engine.loader import (
    MAX_BYTES,
    load_document,
    load_workflow,
    spec_from_dict,
    spec_to_dict,
)
from agentrun.v1.workflow_pb2 import (
    AggregateNode,
    Compensation,
    Concurrency,
    ErrorHandler,
    Node,
    RetryPolicy,
    WorkflowSpec,
)

# Copied from /work/shared/FORMAT.md ("DAG workflows"); tools need not exist for the loader.
CUSTOMER_SUPPORT = """\
name: customer-support            # [a-z0-9-], unique; each update makes a new version
description: Route and answer a support ticket
mode: dag                         # dag (default) | state_machine
input_schema: {type: object, required: [message], properties: {message: {type: string}}}
defaults:
  timeout: 30s                    # per node attempt
  retry: {max_attempts: 3, backoff: exponential, initial_interval: 1s, max_interval: 30s, multiplier: 2, jitter: full}
timeout: 10m                      # whole execution
concurrency: {key: "${{ input.customer_id }}", limit: 1}   # at most 1 running execution per key
nodes:                            # illustrative: orders.internal and inventory.check stand for your services
  - id: classify
    agent:
      model: mock/classifier      # provider/model; providers: mock, openai (any OpenAI-compatible base URL)
      system: You route support tickets.
      prompt: "Classify: ${{ input.message }}"
      output_schema: {type: object, required: [category], properties: {category: {enum: [order, billing, other]}}}
  - id: lookup_order
    needs: [classify]
    when: "${{ nodes.classify.output.category == 'order' }}"
    tool: {name: http.request, args: {method: GET, url: "https://orders.internal/${{ input.order_id }}"}}
    rate_limit: orders-api        # a bucket named in server config
  - id: per_item
    needs: [lookup_order]
    map: {items: "${{ nodes.lookup_order.output.body.items }}", max_concurrency: 8,
          node: {tool: {name: inventory.check, args: {sku: "${{ item.sku }}"}}}}
  - id: approve
    needs: [per_item]
    wait: {signal: approval, timeout: 24h}        # human in the loop: SignalExecution(name=approval)
  - id: reply
    needs: [classify, approve]
    agent: {model: mock/writer, prompt: "Answer: ${{ input.message }}"}
    export: {answer: "${{ output.text }}"}
output: "${{ {'answer': vars.answer, 'category': nodes.classify.output.category} }}"
"""

# Copied from FORMAT.md ("State machines").
ORDER_MACHINE = """\
name: order
mode: state_machine
initial: pending
data: {paid: 0}                                  # the instance's data, changed only by `assign`
states:
  pending:
    on:
      PAY:
        - guard: "${{ event.data.amount >= input.total }}"
          target: paid
          assign: {paid: "${{ event.data.amount }}"}
          actions: [{tool: {name: email.send, args: {to: "${{ input.email }}", subject: Paid}}}]
        - target: pending                        # guards tried in order; first that holds wins
      CANCEL: {target: cancelled}
    after: {30m: {target: expired}}              # shorthand for after: [{delay: 30m, target: expired}]; durable, cancelled when the state is left
  paid:
    entry: [{tool: {name: warehouse.reserve, args: {order: "${{ input.id }}"}}}]
    invoke: {workflow: fulfil, input: {order: "${{ input.id }}"}}    # hybrid: a DAG runs while here
    on_done: {target: shipped}
    on_error: {target: failed}
  shipped: {final: true}
  cancelled: {final: true}
  expired: {final: true}
  failed: {final: true}
"""

# Copied from FORMAT.md ("Errors, retries, fallbacks" and "Compensation"), in a workflow.
HANDLERS = """\
name: saga
nodes:
  - id: charge
    tool: {name: payments.charge, args: {amount: "${{ input.amount }}"}}
    compensate: {tool: {name: payments.refund, args: {charge_id: "${{ output.id }}"}}}
compensation: {strategy: reverse}    # reverse (default: reverse order of completion) | sequential | parallel
error_handlers:
  - match: {nodes: "lookup_.*", errors: [timeout, tool_error]}    # regex on node id; error types or globs
    action: retry
    retry: {max_attempts: 5, backoff: exponential, initial_interval: 500ms}
  - match: {nodes: enrich}
    action: skip                      # node SKIPPED with `output` (default null); its edges are decided as if it succeeded
    output: {}
  - match: {nodes: classify}
    action: fallback                  # run another node spec in its place, or use a value
    fallback: {agent: {model: mock/small, prompt: "..."}}
  - match: {nodes: "charge|ship"}
    action: compensate                # stop, undo what finished (saga), execution ends COMPENSATED
  - match: {errors: ["*"]}
    action: escalate                  # execution waits in ESCALATED for a signal: retry | skip | fail
circuit_breakers: {"http.request": {failure_threshold: 5, window: 60s, reset_timeout: 30s, half_open_calls: 1}}
"""


def diagnostics(text: str | bytes, **kwargs: str) -> list[Diagnostic]:
    with pytest.raises(InvalidWorkflow) as caught:
        load_workflow(text, **kwargs)
    return caught.value.diagnostics


def only_diagnostic(text: str | bytes, **kwargs: str) -> Diagnostic:
    found = diagnostics(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------------------------
# The FORMAT.md examples


def test_customer_support_example_loads() -> None:
    spec = load_workflow(CUSTOMER_SUPPORT, filename="customer-support.yaml")
    assert spec.name == "customer-support"
    assert spec.mode == WorkflowSpec.MODE_DAG
    assert spec.timeout.seconds == 600
    assert spec.defaults.timeout.seconds == 30
    retry = spec.defaults.retry
    assert retry.max_attempts == 3
    assert retry.backoff == RetryPolicy.BACKOFF_EXPONENTIAL
    assert retry.jitter == RetryPolicy.JITTER_FULL
    assert retry.initial_interval.seconds == 1 and retry.max_interval.seconds == 30
    assert retry.multiplier == 2
    assert spec.concurrency.key == "${{ input.customer_id }}"
    assert [node.id for node in spec.nodes] == [
        "classify",
        "lookup_order",
        "per_item",
        "approve",
        "reply",
    ]
    assert [node.WhichOneof("kind") for node in spec.nodes] == [
        "agent",
        "tool",
        "map",
        "wait",
        "agent",
    ]
    classify, lookup, per_item, approve, reply = spec.nodes
    assert classify.agent.prompt == "Classify: ${{ input.message }}"
    assert classify.agent.output_schema["required"][0] == "category"
    assert lookup.tool.args.struct_value["method"] == "GET"
    assert per_item.map.max_concurrency == 8
    assert per_item.map.node.tool.name == "inventory.check"
    assert approve.wait.timeout.seconds == 86400
    assert reply.export_vars["answer"] == "${{ output.text }}"
    assert spec.output.string_value.startswith("${{ {'answer'")
    assert spec.input_schema["properties"]["message"]["type"] == "string"


def test_state_machine_example_loads() -> None:
    spec = load_workflow(ORDER_MACHINE)
    assert spec.mode == WorkflowSpec.MODE_STATE_MACHINE
    assert spec.initial == "pending"
    assert spec.data["paid"] == 0
    pending = spec.states["pending"]
    pay = pending.on["PAY"].transitions
    assert [t.target for t in pay] == ["paid", "pending"]
    assert pay[0].guard == "${{ event.data.amount >= input.total }}"
    assert pay[0].assign["paid"] == "${{ event.data.amount }}"
    assert pay[0].actions[0].tool.name == "email.send"
    assert [t.target for t in pending.on["CANCEL"].transitions] == ["cancelled"]
    assert len(pending.after) == 1
    assert pending.after[0].delay.seconds == 1800
    assert pending.after[0].target == "expired"
    paid = spec.states["paid"]
    assert paid.invoke.name == "fulfil"
    assert paid.on_done.target == "shipped" and paid.on_error.target == "failed"
    assert all(spec.states[name].is_final for name in ("shipped", "cancelled", "expired", "failed"))


def test_error_handler_and_saga_example_loads() -> None:
    spec = load_workflow(HANDLERS)
    actions = [handler.action for handler in spec.error_handlers]
    assert actions == [
        ErrorHandler.ACTION_RETRY,
        ErrorHandler.ACTION_SKIP,
        ErrorHandler.ACTION_FALLBACK,
        ErrorHandler.ACTION_COMPENSATE,
        ErrorHandler.ACTION_ESCALATE,
    ]
    retry = spec.error_handlers[0]
    assert list(retry.match.errors) == ["timeout", "tool_error"]
    assert retry.retry.initial_interval.nanos == 500_000_000
    assert spec.error_handlers[1].output.HasField("struct_value")
    assert spec.error_handlers[2].fallback.agent.model == "mock/small"
    assert list(spec.error_handlers[4].match.errors) == ["*"]
    assert spec.compensation.strategy == Compensation.STRATEGY_REVERSE
    assert spec.nodes[0].compensate.tool.name == "payments.refund"
    breaker = spec.circuit_breakers["http.request"]
    assert breaker.failure_threshold == 5 and breaker.window.seconds == 60


@pytest.mark.parametrize("text", [CUSTOMER_SUPPORT, ORDER_MACHINE, HANDLERS])
def test_round_trip_through_dict(text: str) -> None:
    spec = load_workflow(text)
    stored = spec_to_dict(spec)
    assert spec_from_dict(stored) == spec
    # what pass 1 builds is exactly what protobuf's own JSON parser makes of the same document
    assert json_format.ParseDict(stored, WorkflowSpec()) == spec
    assert load_workflow(json.dumps(stored)) == spec


def test_json_and_yaml_give_the_same_spec() -> None:
    import yaml

    # PyYAML's own YAML 1.1 reading would turn the state machine's `on` into True: only the
    # DAG example survives it unchanged
    as_json = json.dumps(yaml.safe_load(CUSTOMER_SUPPORT))
    assert load_workflow(as_json, filename="w.json") == load_workflow(CUSTOMER_SUPPORT)
    assert load_workflow(as_json.encode()) == load_workflow(CUSTOMER_SUPPORT.encode())


def test_load_document_is_the_normalised_protobuf_json() -> None:
    document = load_document("name: x\nmode: state_machine\nstates: {a: {after: {1h30m: b}}}\n")
    assert document == {
        "name": "x",
        "mode": "MODE_STATE_MACHINE",
        "states": {"a": {"after": [{"delay": "5400s", "target": "b"}]}},
    }


# --------------------------------------------------------------------------------------------
# Conveniences


@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [
        ("mode: dag", lambda s: s.mode, WorkflowSpec.MODE_DAG),
        ("mode: state_machine", lambda s: s.mode, WorkflowSpec.MODE_STATE_MACHINE),
        ("mode: MODE_STATE_MACHINE", lambda s: s.mode, WorkflowSpec.MODE_STATE_MACHINE),
        ("nodes: [{id: a, join: all}]", lambda s: s.nodes[0].join, Node.JOIN_ALL),
        ("nodes: [{id: a, join: ANY}]", lambda s: s.nodes[0].join, Node.JOIN_ANY),
        (
            "compensation: {strategy: parallel}",
            lambda s: s.compensation.strategy,
            Compensation.STRATEGY_PARALLEL,
        ),
        (
            "concurrency: {on_limit: cancel_newest}",
            lambda s: s.concurrency.on_limit,
            Concurrency.ON_LIMIT_CANCEL_NEWEST,
        ),
        (
            "error_handlers: [{action: retry}]",
            lambda s: s.error_handlers[0].action,
            ErrorHandler.ACTION_RETRY,
        ),
        (
            "error_handlers: [{on_timeout: skip}]",
            lambda s: s.error_handlers[0].on_timeout,
            ErrorHandler.ON_TIMEOUT_SKIP,
        ),
        (
            "nodes: [{id: a, aggregate: {strategy: vote}}]",
            lambda s: s.nodes[0].aggregate.strategy,
            AggregateNode.STRATEGY_VOTE,
        ),
        (
            "defaults: {retry: {backoff: linear, jitter: equal}}",
            lambda s: s.defaults.retry.jitter,
            RetryPolicy.JITTER_EQUAL,
        ),
    ],
)
def test_short_enum_names(text: str, read, expected: int) -> None:
    assert read(load_workflow(text)) == expected


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("500ms", 0, 500_000_000),
        ("30s", 30, 0),
        ("5m", 300, 0),
        ("2h", 7200, 0),
        ("1d", 86400, 0),
        ("1.5s", 1, 500_000_000),
        ("1h30m", 5400, 0),
        ('"0.500s"', 0, 500_000_000),
    ],
)
def test_human_durations(text: str, seconds: int, nanos: int) -> None:
    spec = load_workflow(f"timeout: {text}\nnodes: [{{id: a, total_timeout: {text}}}]\n")
    assert (spec.timeout.seconds, spec.timeout.nanos) == (seconds, nanos)
    assert (spec.nodes[0].total_timeout.seconds, spec.nodes[0].total_timeout.nanos) == (
        seconds,
        nanos,
    )


@pytest.mark.parametrize(
    "on",
    [
        "{GO: done}",
        "{GO: {target: done}}",
        "{GO: [{target: done}]}",
        "{GO: {transitions: [{target: done}]}}",
    ],
)
def test_transition_shorthands(on: str) -> None:
    spec = load_workflow(f"mode: state_machine\nstates:\n  a:\n    on: {on}\n")
    assert [t.target for t in spec.states["a"].on["GO"].transitions] == ["done"]


@pytest.mark.parametrize(
    "after",
    ["{30m: late}", "{30m: {target: late}}", "[{delay: 30m, target: late}]"],
)
def test_after_shorthands(after: str) -> None:
    spec = load_workflow(f"states:\n  a:\n    after: {after}\n")
    (timer,) = spec.states["a"].after
    assert (timer.delay.seconds, timer.target) == (1800, "late")


def test_spec_from_dict_takes_the_file_conveniences() -> None:
    spec = spec_from_dict(
        {"mode": "state_machine", "timeout": "5m", "states": {"a": {"on": {"GO": "b"}}}}
    )
    assert spec.mode == WorkflowSpec.MODE_STATE_MACHINE
    assert spec.timeout.seconds == 300
    assert spec.states["a"].on["GO"].transitions[0].target == "b"


def test_spec_from_dict_reports_like_files() -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        spec_from_dict({"nodes": [{"id": "a", "priority": "high"}], "modee": "dag"})
    assert [d.path for d in caught.value.diagnostics] == ["nodes[0].priority", "modee"]


def test_yaml_1_2_core_scalars() -> None:
    spec = load_workflow(
        textwrap.dedent(
            """\
            name: yes
            description: off
            data: {a: on, b: no, c: y, d: n, e: 1:30, f: 2024-01-01, g: 0o17, h: 0x1F,
                   i: TRUE, j: False, k: ~, l: Null, m: 1.5e3, n: 012, o: "true", p: 1_000}
            states:
              start:
                on: {yes: done}
            """
        )
    )
    assert spec.name == "yes"
    assert spec.description == "off"
    data = json_format.MessageToDict(spec.data)
    assert data == {
        "a": "on",
        "b": "no",
        "c": "y",
        "d": "n",
        "e": "1:30",
        "f": "2024-01-01",
        "g": 15,
        "h": 31,
        "i": True,
        "j": False,
        "k": None,
        "l": None,
        "m": 1500,
        "n": 12,
        "o": "true",
        "p": "1_000",
    }
    assert list(spec.states["start"].on) == ["yes"]


def test_unquoted_template_in_block_context_is_a_string() -> None:
    spec = load_workflow("nodes:\n  - id: a\n    when: ${{ input.ok }}\n")
    assert spec.nodes[0].when == "${{ input.ok }}"


def test_value_fields_take_any_json_value() -> None:
    spec = load_workflow(
        "nodes:\n"
        "  - {id: a, pass: {value: null}}\n"
        "  - {id: b, pass: {value: [1, two, {three: 3}]}}\n"
        "  - {id: c, tool: {name: t, args: 5}, output: true}\n"
    )
    # `pass` is a Python keyword: the generated attribute is reached with getattr
    assert spec.nodes[0].pass_node.value.HasField("null_value")
    listed = json_format.MessageToDict(spec.nodes[1].pass_node.value)
    assert listed == [1, "two", {"three": 3}]
    assert spec.nodes[2].tool.args.number_value == 5
    assert spec.nodes[2].output.bool_value is True


def test_scalar_keys_become_strings_in_maps() -> None:
    spec = load_workflow(
        "circuit_breakers: {200: {failure_threshold: 1}}\ninput_schema: {properties: {404: {}}}\n"
    )
    assert list(spec.circuit_breakers) == ["200"]
    assert "404" in spec.input_schema["properties"]


def test_null_means_absent() -> None:
    spec = load_workflow("name: x\ntimeout:\ndefaults: ~\nnodes: [{id: a, retry: null}]\n")
    assert not spec.HasField("timeout") and not spec.HasField("defaults")
    assert not spec.nodes[0].HasField("retry")


def test_a_node_without_kind_is_left_to_the_validator() -> None:
    assert load_workflow("nodes: [{id: a}]").nodes[0].WhichOneof("kind") is None


def test_integral_floats_are_integers() -> None:
    spec = load_workflow('{"nodes": [{"id": "a", "priority": 3.0}]}')
    assert spec.nodes[0].priority == 3


# --------------------------------------------------------------------------------------------
# Problems, each with its path


@pytest.mark.parametrize(
    ("text", "path", "phrase"),
    [
        ("nodes:\n  - id: a\n    tmeout: 5s\n", "nodes[0].tmeout", "did you mean `timeout`"),
        (
            "nodes: [{id: a, frobnicate: 1}]",
            "nodes[0].frobnicate",
            "unknown field `frobnicate` in Node",
        ),
        ("name: x\ninputSchema: {}\n", "inputSchema", "use snake_case `input_schema`"),
        ("nodes: [{id: a, rateLimit: x}]", "nodes[0].rateLimit", "use snake_case `rate_limit`"),
        (
            "nodes:\n  - id: a\n    needs: b\n",
            "nodes[0].needs",
            "expected a list, got the string 'b'",
        ),
        ("nodes: a", "nodes", "expected a list"),
        (
            "nodes: [{id: a, priority: 1.5}]",
            "nodes[0].priority",
            "expected an integer, got the number 1.5",
        ),
        (
            "nodes: [{id: a, priority: x}]",
            "nodes[0].priority",
            "expected an integer, got the string 'x'",
        ),
        (
            "nodes: [{id: a, priority: true}]",
            "nodes[0].priority",
            "expected an integer, got a boolean",
        ),
        ("nodes: [{id: a, priority: 3000000000}]", "nodes[0].priority", "out of range"),
        (
            "states: {a: {final: yes}}",
            "states.a.final",
            "expected true or false, got the string 'yes'",
        ),
        ("nodes: [{id: 5}]", "nodes[0].id", "expected a string, got the integer 5"),
        (
            "nodes: [{id: a, agent: {temperature: hot}}]",
            "nodes[0].agent.temperature",
            "expected a number",
        ),
        (
            "nodes: [{id: a, retry: {backoff: expo}}]",
            "nodes[0].retry.backoff",
            "unknown backoff 'expo'; expected one of: fixed, linear, exponential",
        ),
        ("mode: graph", "mode", "expected one of: dag, state_machine"),
        ("compensation: {strategy: 1}", "compensation.strategy", "expected one of: reverse"),
        ("timeout: 5 minutes", "timeout", "invalid duration '5 minutes'"),
        ("timeout: 30", "timeout", "got the integer 30; write 30s"),
        ("timeout: -5s", "timeout", "negative"),
        (
            "defaults: {retry: {initial_interval: 1x}}",
            "defaults.retry.initial_interval",
            "invalid duration",
        ),
        ("states: {a: {after: {soon: b}}}", "states.a.after.soon", "invalid duration 'soon'"),
        (
            "states: {a: {after: {30m: {delay: 1m, target: b}}}}",
            "states.a.after.30m.delay",
            "remove `delay`",
        ),
        (
            "states: {a: {on: {PAY: [{target: 1}]}}}",
            "states.a.on.PAY[0].target",
            "expected a string",
        ),
        ("states: {a: {on: {GO: {tagret: b}}}}", "states.a.on.GO.tagret", "did you mean `target`"),
        (
            "states: {a: {on: {GO: 5}}}",
            "states.a.on.GO",
            "expected a mapping of Transitions fields",
        ),
        (
            "nodes: [{id: a, agent: {model: m}, tool: {name: t}}]",
            "nodes[0]",
            "has 2 kinds, `agent` and `tool`; a node has exactly one kind",
        ),
        (
            "nodes: [{id: a, tool: {name: t}, compensate: {pass: {value: 1}, workflow: {name: w}}}]",
            "nodes[0].compensate",
            "has 2 kinds, `pass` and `workflow`; a step has exactly one kind",
        ),
        ("input_schema: [1]", "input_schema", "expected a mapping, got a list"),
        ("data: x", "data", "expected a mapping"),
        ("nodes: [{id: a, needs: [a, ~]}]", "nodes[0].needs[1]", "null is not allowed in a list"),
        ("nodes:\n  - id: a\n    200: x\n", "nodes[0].200", "field names are strings"),
        ("defaults: 5", "defaults", "expected a mapping of NodeDefaults fields"),
        ("states: {a: {invoke: {workflow: w, name: v}}}", "states.a.invoke.workflow", "not both"),
        ("nodes: [{id: a, pass: {value: .nan}}]", "nodes[0].pass.value", "not a JSON number"),
        ("circuit_breakers: {true: {}}", "circuit_breakers", "keys are strings, got a boolean"),
        ("name: a\nname: b\n", "name", "duplicate key `name` at line 2"),
        (
            "nodes:\n  - id: a\n    when: {{ x }}\n",
            "nodes[0].when",
            "quote strings that hold ${{ }}",
        ),
        ("nodes: [{id: a, when: { input.ok }}]", "nodes[0].when", "braces make a mapping in YAML"),
        (
            "nodes: [{id: a, tool: {name: t, args: {k: {{ x }}}}}]",
            "nodes[0].tool.args.k",
            "quote strings that hold ${{ }}",
        ),
    ],
)
def test_problem_is_reported_at_its_path(text: str, path: str, phrase: str) -> None:
    found = only_diagnostic(text)
    assert found.path == path
    assert phrase in found.message


@pytest.mark.parametrize(
    ("text", "path", "phrase"),
    [
        ('{"name": "a", "name": "b"}', "name", "duplicate key `name`"),
        ('{"nodes": [{"id": "a", "id": "b"}]}', "nodes[0].id", "duplicate key `id`"),
        ('{"data": {"k": 1, "k": 2}}', "data.k", "duplicate key `k`"),
        ('{"nodes": [{"id": "a", "inputSchema": {}}]}', "nodes[0].inputSchema", "unknown field"),
        ('{"timeout": "5s", "name": NaN}', "", "NaN is not a JSON value"),
        ('{"name": "a",\n "nodes": [}', "", "invalid JSON at line 2, column 12"),
    ],
)
def test_json_problems(text: str, path: str, phrase: str) -> None:
    found = only_diagnostic(text)
    assert found.path == path
    assert phrase in found.message


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("a: &x 1\nb: *x\n", "YAML anchors (&x) are not allowed"),
        ("nodes: [*x]\n", "YAML aliases (*x) are not allowed"),
        ("name: [a\nb: c\n", "YAML syntax error at line 2, column 2"),
        (
            "nodes:\n  - id: a\n    tool: {name: t, args: {x: ${{ input.x }}}}\n",
            "quote strings that hold ${{ }}",
        ),
        ("- a\n- b\n", "a workflow is a mapping at the top level, got a list"),
        ("just text", "a workflow is a mapping at the top level, got the string"),
        ("", "the document is empty"),
        ("# only a comment\n", "the document is empty"),
        ("name: a\n---\nname: b\n", "a second YAML document"),
        (
            "name: !!python/object:os.system x\n",
            "YAML tag tag:yaml.org,2002:python/object:os.system",
        ),
        ("name: !!int x\n", "is not a valid !!int"),
        ('name: "\\x01"\nx: \x07\n', "YAML syntax error at line 2, column 4: control characters"),
    ],
)
def test_document_problems(text: str, phrase: str) -> None:
    found = only_diagnostic(text)
    assert found.path == ""
    assert phrase in found.message


def test_explicit_core_tags_are_understood() -> None:
    spec = load_workflow("name: !!str 5\nnodes: [{id: a, priority: !!int 3}]\n")
    assert spec.name == "5" and spec.nodes[0].priority == 3


def test_every_problem_is_reported_at_once() -> None:
    found = diagnostics(
        "name: x\n"
        "timeout: 5 parsecs\n"
        "nodes:\n"
        "  - id: a\n"
        "    retry: {backoff: sometimes}\n"
        "  - id: b\n"
        "    neds: [a]\n"
    )
    assert [d.path for d in found] == ["timeout", "nodes[0].retry.backoff", "nodes[1].neds"]


def test_reading_problems_and_schema_problems_come_together() -> None:
    found = diagnostics("name: a\nname: b\nmode: tree\n")
    assert [d.path for d in found] == ["name", "mode"]


def test_billion_laughs_is_refused_at_the_first_anchor() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    found = only_diagnostic("\n".join(lines) + "\n")
    assert "YAML anchors (&a0) are not allowed" in found.message


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ("[" * 100_000, ""),
        ("a: " + "[" * 100_000, ""),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 100)), ""),
        ('{"a": ' + "[" * 100_000, ""),
        ("[" * 100_000, "deep.json"),
        ('{"output": ' + "[" * 70 + "]" * 70 + "}", ""),
        ("output: " + "[" * 70 + "]" * 70 + "\n", ""),
    ],
)
def test_deep_nesting_is_refused(text: str, filename: str) -> None:
    found = only_diagnostic(text, filename=filename)
    assert "nesting deeper than 64 levels" in found.message


def test_deep_dicts_are_refused_by_spec_from_dict() -> None:
    value: object = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(InvalidWorkflow, match="nesting deeper than 64 levels"):
        spec_from_dict({"data": {"x": value}})


@pytest.mark.parametrize("as_bytes", [False, True])
def test_documents_over_the_size_limit_are_refused(as_bytes: bool) -> None:
    text = "name: x\ndescription: " + "x" * MAX_BYTES + "\n"
    found = only_diagnostic(text.encode() if as_bytes else text)
    assert "the limit is 1048576 bytes" in found.message


def test_size_limit_counts_bytes_not_characters() -> None:
    text = "description: " + "é" * (MAX_BYTES // 2 + 10)
    assert "the limit is" in only_diagnostic(text).message


def test_invalid_utf8_names_the_offset() -> None:
    found = only_diagnostic(b"name: ok\ndescription: \xff\xfe\n")
    assert found.message == "not valid UTF-8: byte 0xff at offset 22"


def test_filename_prefixes_reading_problems() -> None:
    found = only_diagnostic("a: &x 1", filename="flow.yaml")
    assert found.message.startswith("flow.yaml: line 1, column 4")


def test_json_is_detected_by_name_or_by_brace() -> None:
    # `{` first: JSON rules, so a YAML-only spelling is a JSON syntax error
    assert "invalid JSON" in only_diagnostic("{name: x}").message
    assert "invalid JSON" in only_diagnostic("name: x", filename="w.JSON").message
    assert load_workflow('{"name": "x"}', filename="w.yaml").name == "x"
    assert load_workflow(b'\xef\xbb\xbf{"name": "x"}').name == "x"  # a BOM is not an error


def test_large_documents_load() -> None:
    benchmark_nodes = 10_000
    nodes = [
        {
            "id": f"n{i}",
            "needs": [f"n{i - 1}"] if i else [],
            "timeout": "30s",
            "tool": {"name": "core.echo", "args": {"x": i}},
        }
        for i in range(benchmark_nodes)
    ]
    text = json.dumps({"name": "big", "nodes": nodes}, separators=(",", ":"))
    spec = load_workflow(text)
    assert len(spec.nodes) == benchmark_nodes
    assert spec.nodes[-1].needs == [f"n{benchmark_nodes - 2}"]


def test_presence_matches_protobufs_json_parser() -> None:
    document = {
        "timeout": "0s",
        "input_schema": {},
        "defaults": {},
        "output": {},
        "nodes": [{"id": "a", "pass": {}, "output": [], "export": {}, "retry": {}}],
        "states": {"s": {"on": {"E": {}}, "invoke": {}}},
    }
    spec = spec_from_dict(document)
    assert spec == json_format.ParseDict(document, WorkflowSpec())
    assert spec.HasField("timeout") and spec.HasField("input_schema")
    assert spec.output.HasField("struct_value")
    assert spec.nodes[0].WhichOneof("kind") == "pass_node"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# No per-example deadline: on a loaded machine one example can take longer than 200 ms.
@settings(deadline=None)
@given(data=st.dictionaries(st.text(max_size=8), json_values, max_size=4), output=json_values)
def test_free_form_values_match_protobufs_json_parser(data: dict, output: object) -> None:
    document = {"data": data, "output": output}
    assert spec_from_dict(document) == json_format.ParseDict(document, WorkflowSpec())


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("a: &x 1\n", "YAML anchors (&x) are not allowed"),
        ("nodes: [*x]\n", "YAML aliases (*x) are not allowed"),
        ("[" * 100_000, "nesting deeper than 64 levels"),
        ("name: a\nname: b\n", "duplicate key `name` at line 2"),
        ("name: [a\nb: c\n", "YAML syntax error at line 2"),
        ("name: a\n---\nname: b\n", "a second YAML document"),
        ("x: \x07\n", "YAML syntax error at line 1, column 4"),
    ],
)
def test_pure_python_yaml_parser_reads_the_same(
    monkeypatch: pytest.MonkeyPatch, text: str, phrase: str
) -> None:
    """Builds of PyYAML without libyaml read through the pure-Python parser."""
    from agentrun.engine import spec_text

    with_libyaml = load_workflow(ORDER_MACHINE)
    monkeypatch.setattr(spec_text, "_EventParser", spec_text._PyEventParser)
    assert load_workflow(ORDER_MACHINE) == with_libyaml
    assert phrase in only_diagnostic(text).message


def test_on_done_and_on_error_take_a_bare_target() -> None:
    spec = load_workflow(
        "name: m\nmode: state_machine\ninitial: a\nstates:\n"
        "  a: {invoke: {workflow: f}, on_done: b, on_error: c}\n  b: {final: true}\n  c: {final: true}\n"
    )
    assert spec.states["a"].on_done.target == "b"
    assert spec.states["a"].on_error.target == "c"
