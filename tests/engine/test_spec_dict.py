"""`spec_words.to_dict` (the stored form of a spec) is the protobuf printer's dict, renamed.

It walks messages with its own tables for speed; these tests hold it to the printer's output
(`MessageToDict(preserving_proto_field_name=True)` then `_rename`), key order included, on every
example and on a spec that sets every kind of field, and to the printer's errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agentrun import spec_words
from agentrun.engine.loader import load_workflow, spec_from_dict
from agentrun.engine.message_checks import check_message, checked_dict
from agentrun.v1 import workflow_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def _reference(message: Any) -> Any:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    spec_words._rename(spec_words.descriptor(message), data)
    return data


def _same(message: Any) -> None:
    fast, slow = spec_words.to_dict(message), _reference(message)
    assert json.dumps(fast) == json.dumps(slow)  # values and key order
    assert fast == slow


EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if "_config" not in p.name]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_print_as_the_printer_does(path: Path) -> None:
    _same(load_workflow(path.read_text()))


EVERY_KIND = """
name: every-kind
description: all field kinds
timeout: 90s
input_schema: {type: object, properties: {n: {type: integer}}, required: [n]}
defaults: {retry: {max_attempts: 3, backoff: exponential, initial_interval: 1.5s, multiplier: 2.5}}
budget: {max_tokens: 12345678901, max_cost: 2.5, window: day}
concurrency: {key: "${{ input.n }}", limit: 2}
compensation: {strategy: parallel}
circuit_breakers:
  flaky: {failure_threshold: 3, window: 60s, reset_timeout: 5s}
nodes:
  - id: a
    tool:
      name: core.echo
      args: {s: "x", n: 1, f: 1.5, b: true, z: null, l: [1, "two", {k: [null]}], o: {}}
      labels: {zone: eu, gpu: "yes"}
    retry: {max_attempts: 2, jitter: full}
  - id: b
    needs: [a]
    pass: {value: "${{ nodes.a.output.n }}"}
    export: {total: "${{ nodes.a.output.n + 1 }}"}
  - id: s
    needs: [b]
    switch:
      cases: [{when: "nodes.b.output > 1", goto: c}]
      default: d
  - {id: c, pass: {value: 1}}
  - {id: d, pass: {value: 2}}
  - {id: e, pass: {value: 3}}
  - id: m
    needs: [a]
    map: {items: "${{ nodes.a.output.l }}", node: {tool: {name: core.echo, args: {i: "${{ item }}"}}}}
  - id: g
    needs: [m]
    agent: {model: mock/echo, prompt: hi, temperature: 0.25, max_turns: 3, stream: false}
edges:
  - {from: c, to: e, when: "true", input: {x: 1}}
  - {from: d, to: e}
"""


def test_every_kind_of_field_prints_as_the_printer_does() -> None:
    spec = load_workflow(EVERY_KIND)
    _same(spec)
    assert spec_words.to_dict(spec)["budget"]["max_tokens"] == "12345678901"  # int64: a string


def test_values_the_tables_do_not_cover_go_to_the_printer() -> None:
    spec = spec_from_dict({"name": "w", "nodes": [{"id": "a", "pass": {"value": 1}}]})
    spec.defaults.retry.multiplier = math.nan  # a double field: the printer writes "NaN"
    spec.compensation.strategy = 99  # type: ignore[assignment]  # a number no name has
    _same(spec)
    assert spec_words.to_dict(spec)["defaults"]["retry"]["multiplier"] == "NaN"
    assert spec_words.to_dict(spec)["compensation"]["strategy"] == 99


def test_nan_in_a_value_is_refused_as_the_printer_refuses_it() -> None:
    spec = pb.WorkflowSpec(name="w")
    node = spec.nodes.add(id="a")
    node.pass_node.value.number_value = math.inf
    with pytest.raises(json_format.SerializeToJsonError):
        json_format.MessageToDict(spec)
    with pytest.raises(json_format.SerializeToJsonError):
        spec_words.to_dict(spec)


def test_the_checked_dict_is_the_stored_form_of_a_clean_spec() -> None:
    for spec in [load_workflow(EVERY_KIND)] + [load_workflow(p.read_text()) for p in EXAMPLES]:
        assert not check_message(spec)
        checked = checked_dict(spec)
        assert checked is not None
        assert json.dumps(checked) == json.dumps(spec_words.to_dict(spec))


def _bad_specs() -> list[tuple[str, pb.WorkflowSpec]]:
    def spec() -> pb.WorkflowSpec:
        return load_workflow(EVERY_KIND)

    cases = []
    s = spec()
    s.nodes[0].id = "a\x00"
    cases.append(("NUL in an id", s))
    s = spec()
    s.nodes[1].needs.append("x" * 1_000_001)
    cases.append(("a long string in a list", s))
    s = spec()
    s.name = "w" * 257
    cases.append(("a long name", s))
    s = spec()
    s.defaults.retry.multiplier = math.nan
    cases.append(("NaN in a double", s))
    s = spec()
    s.compensation.strategy = 99  # type: ignore[assignment]
    cases.append(("an unknown enum number", s))
    s = spec()
    s.defaults.timeout.seconds, s.defaults.timeout.nanos = 1, -5
    cases.append(("a mixed-sign duration", s))
    s = spec()
    s.defaults.timeout.seconds = 10**12
    cases.append(("a duration out of range", s))
    s = spec()
    s.nodes.add(id="z").pass_node.value.string_value = "a\x00b"
    cases.append(("NUL in a Value string", s))
    s = spec()
    s.nodes.add(id="z").pass_node.value.struct_value.fields["k\x00"].number_value = 1
    cases.append(("NUL in a Struct key", s))
    s = spec()
    s.nodes.add(id="z").pass_node.value.list_value.values.add().number_value = math.inf
    cases.append(("an infinity in a list", s))
    s = spec()
    s.nodes.add(id="z").tool.labels["k\x00"] = "v"
    cases.append(("NUL in a map key", s))
    s = spec()
    s.nodes.add(id="z").tool.labels["k"] = "v\x00"
    cases.append(("NUL in a map value", s))
    s = spec()
    s.circuit_breakers["b\x00"].failure_threshold = 3
    cases.append(("NUL in a map key of messages", s))
    return cases


@pytest.mark.parametrize("case", _bad_specs(), ids=lambda c: c[0])
def test_the_checked_dict_refuses_what_the_value_checks_refuse(
    case: tuple[str, pb.WorkflowSpec],
) -> None:
    _, spec = case
    assert check_message(spec)
    assert checked_dict(spec) is None
