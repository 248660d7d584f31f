"""One DAG node: its spec message and its draft (edges linked) → a complete, frozen `NodePlan`.

The fields every node has (when, join, timeouts, retry, output, export, compensate, rate
limit, priority), then those of its kind (the call, the map, the switch cases, the wait, the
aggregate), then the names its expressions read, which the run uses to build activations.
"""

from __future__ import annotations

import re
from typing import Any

from agentrun import spec_words
from agentrun.engine.dag_graph import Draft
from agentrun.engine.expressions import (
    NO_NAMES,
    Expression,
    ExpressionError,
    Template,
    _strip_strings,
    compile_template,
)
from agentrun.engine.plan import (
    AgentNode,
    AggregateNode,
    MapNode,
    NodePlan,
    PassNode,
    PassStep,
    StepNode,
    StepPlan,
    SwitchCase,
    SwitchNode,
    ToolNode,
    WaitNode,
    WorkflowNode,
)
from agentrun.engine.retry import RetrySpec
from agentrun.engine.step_compiler import StepCompiler, at_most_once, is_irreversible, value_to_py
from agentrun.v1 import workflow_pb2 as pb

__all__ = ["BASE_NAMES", "IN_MAP", "WITH_OUTPUT", "compile_node", "self_ref_problem"]

BASE_NAMES = frozenset({"input", "nodes", "vars", "execution", "secrets"})
WITH_OUTPUT = BASE_NAMES | {"output"}
IN_MAP = BASE_NAMES | {"item", "index"}

_STEP_NODES: dict[str, type[NodePlan]] = {
    "agent": AgentNode,
    "tool": ToolNode,
    "pass": PassNode,
    "workflow": WorkflowNode,
}
_STRATEGY = {
    pb.AggregateNode.STRATEGY_UNSPECIFIED: "merge",
    pb.AggregateNode.STRATEGY_MERGE: "merge",
    pb.AggregateNode.STRATEGY_CONCAT: "concat",
    pb.AggregateNode.STRATEGY_FIRST: "first",
    pb.AggregateNode.STRATEGY_VOTE: "vote",
    pb.AggregateNode.STRATEGY_EXPR: "expr",
}


def compile_node(
    c: StepCompiler,
    draft: Draft,
    n: Any,
    default_retry: RetrySpec,
    default_timeout: float | None,
) -> NodePlan:
    """Problems go to `c`; references to other nodes are the caller's to check (it knows the
    graph's ancestry)."""
    path = draft.path
    kind = spec_words.which(n)
    # One C call tells which fields are set; most nodes set few of them.
    present = {fd.name for fd, _ in n.ListFields()}
    f: dict[str, Any] = {}
    if "when" in present:
        f["when"] = c.boolean(n.when, f"{path}.when", BASE_NAMES)
    if "join" in present:
        f["join_all"] = n.join == pb.Node.JOIN_ALL
    takes_timeout = kind in ("agent", "tool", "pass", "map")
    if "timeout" in present:
        f["timeout"] = c.duration(n, "timeout", path)
        if not takes_timeout:
            c.error(
                f"{path}.timeout",
                f"a {kind} node takes no timeout"
                + (" (use wait.timeout)" if kind == "wait" else ""),
            )
    elif takes_timeout:
        f["timeout"] = default_timeout
    if "total_timeout" in present:
        f["total_timeout"] = c.duration(n, "total_timeout", path)
    retry = c.retry(n.retry, f"{path}.retry") if "retry" in present else default_retry
    if "output" in present:
        f["output"] = c.template(value_to_py(n.output), f"{path}.output", WITH_OUTPUT)
    if "export_vars" in present:
        f["export"] = {
            key: c.template(value_to_py(value), f"{path}.export.{key}", WITH_OUTPUT)
            for key, value in n.export_vars.fields.items()
        }
    if "compensate" in present:
        f["compensate"] = c.standalone_step(n.compensate, f"{path}.compensate", WITH_OUTPUT)
    if "rate_limit" in present:
        f["rate_limit"] = n.rate_limit
    if "priority" in present:
        f["priority"] = n.priority
    if n.on_exhausted == pb.Budget.ON_EXHAUSTED_PAUSE:
        f["on_exhausted"] = "pause"
        if kind not in ("agent", "tool", "workflow"):
            c.error(
                f"{path}.on_exhausted",
                f"a {kind} node cannot pause on failure (agent, tool and workflow nodes can)",
            )

    cls: type[NodePlan]
    parts: dict[str, Any]
    if kind == "map":
        cls, parts = MapNode, _map(c, n.map, f"{path}.map")
    elif kind == "switch":
        cls, parts = SwitchNode, _switch(c, n.switch_node, path)
    elif kind == "wait":
        cls, parts = WaitNode, _wait(c, n.wait, f"{path}.wait")
    elif kind == "aggregate":
        cls, parts = AggregateNode, _aggregate(c, n.aggregate, path, bool(draft.incoming))
    else:
        # A node naming no kind was reported (DagCompiler._drafts); it stands as a pass node
        # so that its other fields are still checked.
        cls = _STEP_NODES.get(kind or "", PassNode)
        step = c.step(n, kind, path, BASE_NAMES) if kind else _stand_in_step(path)
        parts = {"step": step}
        if is_irreversible(step):
            parts["irreversible"] = True
            retry = at_most_once(retry)
    f.update(parts)

    names: set[str] = set()
    refs: set[str] = set()
    for expr in _expressions(f):
        names |= expr.names
        refs |= expr.node_refs
    for part in (f.get("step"), f.get("body"), f.get("compensate")):
        if part is not None:
            names |= part.names
            refs |= part.node_refs
    return cls(
        id=draft.id,
        index=draft.index,
        path=path,
        incoming=tuple(draft.incoming),
        outgoing=tuple(draft.outgoing),
        retry=retry,
        names=frozenset(names) if names else NO_NAMES,
        node_refs=frozenset(refs) if refs else NO_NAMES,
        sink=not draft.outgoing,
        **f,
    )


def _map(c: StepCompiler, m: Any, mpath: str) -> dict[str, Any]:
    # A part that does not compile is reported and replaced by a stand-in, so the node is
    # still built and its other expressions checked; the compile fails, the stand-in never runs.
    f: dict[str, Any] = {"items": None, "body": None}
    if not m.items:
        c.error(f"{mpath}.items", "is required")
    else:
        try:
            f["items"] = c.expression(Expression(_unwrap(m.items), f"{mpath}.items", BASE_NAMES))
        except ExpressionError as e:
            c.error(e.path, e.message)
    if m.max_concurrency < 0:
        c.error(f"{mpath}.max_concurrency", "must not be negative")
    f["max_concurrency"] = m.max_concurrency
    has_node, has_wf = m.HasField("node"), m.HasField("workflow")
    if has_node == has_wf:
        c.error(mpath, "needs exactly one of node or workflow")
    elif has_node:
        f["body"] = c.standalone_step(m.node, f"{mpath}.node", IN_MAP, waits=True)
    else:
        f["body"] = c.step(pb.Step(workflow=m.workflow), "workflow", mpath, IN_MAP)
    if f["items"] is None:
        f["items"] = Expression("[]", f"{mpath}.items")
    if f["body"] is None:
        f["body"] = _stand_in_step(mpath)
    return f


def _switch(c: StepCompiler, sw: Any, path: str) -> dict[str, Any]:
    cases = []
    for k, case in enumerate(sw.cases):
        if not case.when:
            c.error(f"{path}.switch.cases[{k}].when", "is required")
            continue
        expr = c.boolean(case.when, f"{path}.switch.cases[{k}].when", BASE_NAMES)
        if expr is not None:
            cases.append(SwitchCase(expr, case.target))
    return {"cases": tuple(cases), "default": sw.default_target}


def _wait(c: StepCompiler, w: Any, wpath: str) -> dict[str, Any]:
    given = [
        x
        for x in ("signal", "duration", "until")
        if (w.HasField(x) if x == "duration" else bool(getattr(w, x)))
    ]
    if len(given) != 1:
        c.error(wpath, "needs exactly one of signal, duration or until")
    f: dict[str, Any] = {
        "signal": w.signal,
        "duration": c.duration(w, "duration", wpath, allow_zero=True),
    }
    if w.until:
        f["until"] = c.template(w.until, f"{wpath}.until", BASE_NAMES)
    f["wait_timeout"] = c.duration(w, "timeout", wpath)
    f["wait_schema"] = c.wait_schema(w, wpath)
    return f


def _aggregate(c: StepCompiler, a: Any, path: str, has_incoming: bool) -> dict[str, Any]:
    f: dict[str, Any] = {"strategy": _STRATEGY[a.strategy]}
    if f["strategy"] == "expr":
        if not a.expr:
            c.error(f"{path}.aggregate.expr", "is required for strategy expr")
        else:
            try:
                f["expr"] = c.expression(
                    Expression(_unwrap(a.expr), f"{path}.aggregate.expr", BASE_NAMES | {"outputs"})
                )
            except ExpressionError as e:
                c.error(e.path, e.message)
    elif a.expr:
        c.error(f"{path}.aggregate.expr", "is only used with strategy expr")
    if not has_incoming:
        c.error(f"{path}.aggregate", "needs at least one incoming edge")
    return f


def _stand_in_step(path: str) -> StepPlan:
    """In place of a call that did not compile (its problem is reported): never run."""
    return PassStep(path=path, value=compile_template(None, path))


def _expressions(f: dict[str, Any]) -> list[Expression | Template]:
    """The node's own expressions and templates (its calls' are the steps')."""
    out: list[Expression | Template] = [
        x
        for x in (f.get("output"), f.get("until"), *(f.get("export") or {}).values())
        if x is not None
    ]
    out += [x for x in (f.get("items"), f.get("expr"), f.get("when")) if x is not None]
    out += [case.when for case in f.get("cases", ())]
    return out


def self_ref_problem(plan: NodePlan) -> str | None:
    """A node may read its own `input` (what its edges mapped), nothing else of itself."""
    own = re.compile(r"\bnodes\s*\.\s*" + re.escape(plan.id) + r"\b(?:\s*\.\s*([A-Za-z_]\w*))?")
    for source in (e.source for e in _node_expressions(plan) if e is not None):
        for m in own.finditer(_strip_strings(source)):
            if m.group(1) != "input":
                return f"a node may read only its own input: nodes.{plan.id}.{m.group(1) or ''} is not allowed"
    return None


def _node_expressions(plan: NodePlan) -> list[Expression | None]:
    out: list[Expression | None] = [plan.when]
    templates = [plan.output, *(plan.export or {}).values()]
    parts = [plan.compensate]
    match plan:
        case StepNode():
            parts.append(plan.step)
        case MapNode():
            out.append(plan.items)
            parts.append(plan.body)
        case SwitchNode():
            out += [case.when for case in plan.cases]
        case WaitNode():
            templates.append(plan.until)
        case AggregateNode():
            out.append(plan.expr)
    for part in parts:
        if part is not None:
            templates += part.templates
    for t in templates:
        if t is not None:
            out.extend(t.expressions)
    return out


def _unwrap(text: str) -> str:
    m = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.DOTALL)
    return m.group(1).strip() if m else text
