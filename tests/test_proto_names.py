"""Proto field names are identifiers in every generated language; files keep their words.

Fields whose file word is a keyword somewhere (`pass`, `from`, `switch`, `default`, `goto`,
`final`, `export`) are renamed in the proto and keep the word as `json_name` (spec_words).
"""

from __future__ import annotations

import keyword

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FileDescriptor

from agentrun import spec_words
from agentrun.engine.errors import InvalidWorkflow
from agentrun.engine.loader import load_workflow, spec_from_dict, spec_to_dict
from agentrun.v1 import (
    error_reason_pb2,
    execution_pb2,
    execution_service_pb2,
    state_machine_pb2,
    state_machine_service_pb2,
    worker_service_pb2,
    workflow_pb2,
    workflow_service_pb2,
)

FILES: list[FileDescriptor] = [
    m.DESCRIPTOR
    for m in (
        error_reason_pb2,
        execution_pb2,
        execution_service_pb2,
        state_machine_pb2,
        state_machine_service_pb2,
        worker_service_pb2,
        workflow_pb2,
        workflow_service_pb2,
    )
]
# Field names that generated code spells as written: Python attributes and keyword arguments,
# and JavaScript (google-protobuf's generator prefixes these with `pb_`; JS keeps ES3's list).
# Go, Java and C# capitalise accessors (`GetType`, `getSwitch`, `Event`), so their lower-case
# keywords (`type`, `map`, `event`) cannot clash.
JS_RESERVED = {
    "abstract",
    "boolean",
    "break",
    "byte",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "final",
    "finally",
    "float",
    "for",
    "function",
    "goto",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "int",
    "interface",
    "long",
    "native",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "short",
    "static",
    "super",
    "switch",
    "synchronized",
    "this",
    "throw",
    "throws",
    "transient",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "volatile",
    "while",
    "with",
    "yield",
    "let",
    "await",
}
RENAMED = {
    ("Node", "pass_node"): "pass",
    ("Step", "pass_node"): "pass",
    ("Node", "switch_node"): "switch",
    ("Node", "export_vars"): "export",
    ("SwitchNode", "default_target"): "default",
    ("SwitchCase", "target"): "goto",
    ("Edge", "from_node"): "from",
    ("MachineState", "is_final"): "final",
}


def _messages(descriptors: list[Descriptor]) -> list[Descriptor]:
    out = []
    for d in descriptors:
        out.append(d)
        out.extend(_messages(list(d.nested_types)))
    return out


ALL_MESSAGES = [m for f in FILES for m in _messages(list(f.message_types_by_name.values()))]


def test_no_field_name_is_a_keyword_where_generated_code_spells_it() -> None:
    bad = [
        f"{m.full_name}.{fd.name}"
        for m in ALL_MESSAGES
        for fd in m.fields
        if keyword.iskeyword(fd.name) or fd.name in JS_RESERVED
    ]
    assert bad == []


def test_renamed_fields_keep_their_file_words_and_nothing_else_is_renamed() -> None:
    words = {
        (m.name, fd.name): spec_words.word(fd)
        for m in ALL_MESSAGES
        for fd in m.fields
        if spec_words.word(fd) != fd.name
    }
    assert words == RENAMED


def test_generated_python_takes_the_new_names_as_keyword_arguments() -> None:
    edge = workflow_pb2.Edge(from_node="a", to="b")
    node = workflow_pb2.Node(id="a", pass_node=workflow_pb2.PassNode())
    assert json_format.MessageToDict(edge) == {"from": "a", "to": "b"}
    assert json_format.MessageToDict(node) == {"id": "a", "pass": {}}


WORKFLOW = """
name: words
nodes:
  - id: a
    pass: {value: 1}
    export: {k: "${{ output }}"}
  - id: pick
    needs: [a]
    switch:
      cases: [{when: "${{ true }}", goto: b}]
      default: c
  - id: b
    pass: {value: 2}
  - id: c
    pass: {value: 3}
  - id: d
    tool: {name: t}
edges:
  - {from: b, to: d}
"""


def test_files_use_the_words_and_round_trip() -> None:
    spec = load_workflow(WORKFLOW)
    assert spec.nodes[0].pass_node.value.number_value == 1
    assert dict(spec.nodes[0].export_vars) == {"k": "${{ output }}"}
    assert spec.nodes[1].switch_node.cases[0].target == "b"
    assert spec.nodes[1].switch_node.default_target == "c"
    assert spec.edges[0].from_node == "b"
    document = spec_to_dict(spec)
    assert document["nodes"][0]["pass"] == {"value": 1.0}
    assert document["nodes"][0]["export"] == {"k": "${{ output }}"}
    assert document["nodes"][1]["switch"] == {
        "cases": [{"when": "${{ true }}", "goto": "b"}],
        "default": "c",
    }
    assert document["edges"] == [{"from": "b", "to": "d"}]
    assert list(document["nodes"][0]) == ["id", "export", "pass"]  # field order kept
    assert spec_from_dict(document) == spec
    assert json_format.ParseDict(document, workflow_pb2.WorkflowSpec()) == spec


def test_machine_final_and_step_pass_keep_their_words() -> None:
    spec = load_workflow(
        "name: m\nmode: state_machine\ninitial: a\nstates:\n"
        "  a: {on: {go: b}, entry: [{pass: {value: 1}}]}\n  b: {final: true}\n"
    )
    assert spec.states["b"].is_final
    assert spec.states["a"].entry[0].pass_node.value.number_value == 1
    document = spec_to_dict(spec)
    assert document["states"]["b"] == {"final": True}
    assert document["states"]["a"]["entry"] == [{"pass": {"value": 1.0}}]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "nodes: [{id: a, pass_node: {}}]",
            "nodes[0].pass_node",
            "`pass_node` is the field's name in generated code; workflow files write `pass`",
        ),
        (
            "nodes: [{id: a, pass: {}}]\nedges: [{from_node: a, to: a}]",
            "edges[0].from_node",
            "workflow files write `from`",
        ),
        ("nodes: [{id: a, passNode: {}}]", "nodes[0].passNode", "unknown field `passNode`"),
        ("states: {a: {is_final: true}}", "states.a.is_final", "workflow files write `final`"),
        (
            "nodes: [{id: a, switch: {cases: [{when: x, target: b}]}}]",
            "nodes[0].switch.cases[0].target",
            "workflow files write `goto`",
        ),
    ],
)
def test_proto_names_and_other_spellings_are_refused_in_files(
    text: str, path: str, message: str
) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        load_workflow(text)
    found = {d.path: d.message for d in info.value.diagnostics}
    assert path in found, found
    assert message in found[path]


def test_two_kinds_are_named_by_their_words() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        load_workflow("nodes: [{id: a, pass: {}, switch: {default: a}}]")
    assert "`switch` and `pass`" in str(info.value) or "`pass` and `switch`" in str(info.value)
