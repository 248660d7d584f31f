"""Mermaid flowcharts of workflows (`agentrun graph FILE`).

Works from the `WorkflowSpec` message alone, so it draws any workflow the loader accepts,
even one the compiler would reject (an unknown tool still has a place in the picture).
"""

from __future__ import annotations

import re

from agentrun import spec_words
from agentrun.v1 import workflow_pb2 as pb

__all__ = ["to_mermaid"]

# Words that end or open blocks in Mermaid's flowchart grammar; a node id spelled like one
# would break the chart, so such ids get a suffix in the chart (labels keep the real id).
_RESERVED = frozenset(
    {
        "end",
        "graph",
        "subgraph",
        "flowchart",
        "style",
        "class",
        "classdef",
        "click",
        "linkstyle",
        "direction",
        "default",
        "call",
        "href",
    }
)
_EXPR = re.compile(r"^\s*\$\{\{\s*(.*?)\s*\}\}\s*$", re.DOTALL)
_MAX_LABEL = 60

# The node's shape tells its kind at a glance; the label says it in words.
_SHAPES = {
    "switch": ("{", "}"),
    "wait": ("([", "])"),
    "map": ("[[", "]]"),
    "aggregate": ("[/", "\\]"),
    "workflow": ("[[", "]]"),
}


def to_mermaid(spec: pb.WorkflowSpec) -> str:
    """A `flowchart TD` of the workflow: one node per node (id and kind), one arrow per
    dependency; conditional edges and switch cases carry their condition as a label.
    State machines are drawn with one node per state and one arrow per transition."""
    if spec.mode == pb.WorkflowSpec.MODE_STATE_MACHINE:
        return _state_machine(spec)
    lines = ["flowchart TD"]
    for node in spec.nodes:
        lines.append(f"    {_id(node.id)}{_shape(node)}")
    for node in spec.nodes:
        for source in node.needs:
            lines.append(f"    {_id(source)} --> {_id(node.id)}")
    for edge in spec.edges:
        lines.append(_arrow(edge.from_node, edge.to, edge.when))
    for node in spec.nodes:
        if node.WhichOneof("kind") != "switch_node":
            continue
        for case in node.switch_node.cases:
            lines.append(_arrow(node.id, case.target, case.when))
        if node.switch_node.default_target:
            target = node.switch_node.default_target
            lines.append(_arrow(node.id, target, "default", expression=False))
    return "\n".join(lines) + "\n"


def _state_machine(spec: pb.WorkflowSpec) -> str:
    lines = ["flowchart TD"]
    if spec.initial:
        lines.append("    start__((start))")
    for name in sorted(spec.states):
        state = spec.states[name]
        open_, close = ("((", "))") if state.is_final else ("([", "])")
        lines.append(f'    {_state_id(name)}{open_}"{_escape(name)}"{close}')
    if spec.initial:
        lines.append(f"    start__ --> {_state_id(spec.initial)}")
    for name in sorted(spec.states):
        state = spec.states[name]
        for event in sorted(state.on):
            for transition in state.on[event].transitions:
                label = event + (f" [{_strip(transition.guard)}]" if transition.guard else "")
                target = transition.target or name
                lines.append(_state_arrow(name, target, label))
        for timer in state.after:
            delay = _human(timer.delay.ToTimedelta().total_seconds())
            lines.append(_state_arrow(name, timer.target or name, f"after {delay}"))
        if state.HasField("on_done"):
            lines.append(_state_arrow(name, state.on_done.target or name, "done"))
        if state.HasField("on_error"):
            lines.append(_state_arrow(name, state.on_error.target or name, "error"))
    return "\n".join(lines) + "\n"


def _state_id(name: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _state_arrow(source: str, target: str, label: str) -> str:
    return f'    {_state_id(source)} -->|"{_escape(_shorten(label))}"| {_state_id(target)}'


def _id(node_id: str) -> str:
    return f"{node_id}_" if node_id.lower() in _RESERVED else node_id


def _shape(node: pb.Node) -> str:
    kind = spec_words.which(node) or "none"
    open_, close = _SHAPES.get(kind, ("[", "]"))
    return f'{open_}"{_escape(f"{node.id}: {_describe(node, kind)}")}"{close}'


def _describe(node: pb.Node, kind: str) -> str:
    if kind == "agent":
        return f"agent {node.agent.model}".rstrip()
    if kind == "tool":
        return f"tool {node.tool.name}".rstrip()
    if kind == "map":
        body = spec_words.which(node.map.node)
        if node.map.HasField("workflow"):
            inner = f"workflow {node.map.workflow.name}"
        elif body == "tool":
            inner = f"tool {node.map.node.tool.name}"
        elif body == "agent":
            inner = f"agent {node.map.node.agent.model}"
        elif body == "workflow":
            inner = f"workflow {node.map.node.workflow.name}"
        else:
            inner = body or ""
        return f"map {inner}".rstrip()
    if kind == "wait":
        wait = node.wait
        if wait.signal:
            return f"wait signal {wait.signal}"
        if wait.HasField("duration"):
            return f"wait {_human(wait.duration.ToTimedelta().total_seconds())}"
        if wait.until:
            return "wait until"
        return "wait"
    if kind == "aggregate":
        strategy = pb.AggregateNode.Strategy.Name(node.aggregate.strategy)
        if node.aggregate.strategy == pb.AggregateNode.STRATEGY_UNSPECIFIED:
            return "aggregate"
        return f"aggregate {strategy.removeprefix('STRATEGY_').lower()}"
    if kind == "workflow":
        return f"workflow {node.workflow.name}"
    return kind


def _arrow(source: str, target: str, label: str, *, expression: bool = True) -> str:
    if not label:
        return f"    {_id(source)} --> {_id(target)}"
    text = _strip(label) if expression else label
    return f'    {_id(source)} -->|"{_escape(_shorten(text))}"| {_id(target)}'


def _human(seconds: float) -> str:
    """1800 -> 30m, 5400 -> 1h30m, 0.5 -> 500ms: durations as workflow files write them."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count = int(rest // size)
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def _strip(expression: str) -> str:
    """`${{ x > 1 }}` reads better as `x > 1` on an arrow."""
    match = _EXPR.match(expression)
    return match.group(1) if match else expression


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _escape(text: str) -> str:
    # Mermaid's entity codes: quoted labels may hold anything but a double quote, and
    # angle brackets would be read as HTML.
    return (
        text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )
