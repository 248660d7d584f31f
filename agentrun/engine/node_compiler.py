"""One DAG node: its spec message and its draft (edges linked) → a complete, frozen `NodePlan`.

The fields every node has (when, join, timeouts, retry, output, export, compensate, rate
limit, priority), then those of its kind (the call, the map, the switch cases, the wait, the
aggregate), then the names its expressions read, which the run uses to build activations.
"""

from __future__ import annotations

import re
from typing import Any, cast

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
    new_plan,
)
from agentrun.engine.retry import RetrySpec
from agentrun.engine.step_compiler import StepCompiler, at_most_once, is_irreversible, value_to_py
from agentrun.v1 import workflow_pb2 as pb

__all__ = [
    "BASE_NAMES",
    "DOC_KINDS",
    "IN_MAP",
    "NODE_KINDS",
    "WITH_OUTPUT",
    "compile_node",
    "self_ref_problem",
]

BASE_NAMES = frozenset({"input", "nodes", "vars", "execution", "secrets"})
WITH_OUTPUT = BASE_NAMES | {"output"}
IN_MAP = BASE_NAMES | {"item", "index"}

# The proto name of each kind's member of `Node.kind`, by its file word (`pass`: `pass_node`),
# and that word by proto name.
_MEMBERS = {
    spec_words.word(fd): fd.name
    for fd in spec_words.descriptor(pb.Node).oneofs_by_name["kind"].fields
}
NODE_KINDS: dict[str | None, str] = {name: kind for kind, name in _MEMBERS.items()}
_TAKES_TIMEOUT = frozenset({"agent", "tool", "pass", "map"})
# Keys of a node's parts that hold no expression of the node's own.
_NO_EXPRESSIONS = frozenset(
    {"timeout", "total_timeout", "join_all", "compensate", "rate_limit", "priority", "step"}
    | {"on_exhausted", "irreversible", "body", "max_concurrency", "strategy", "default"}
    | {"signal", "duration", "wait_timeout", "wait_schema"}
)

# The kinds whose call `StepCompiler.step` reads from the node's stored form: a bare node of
# these kinds needs no message.
DOC_KINDS = frozenset({"pass", "tool"})
_STEP_NODES: dict[str, type[StepNode]] = {
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
    default_retry: RetrySpec,
    default_timeout: float | None,
) -> NodePlan:
    """Problems go to `c`; references to other nodes are the caller's to check (it knows the
    graph's ancestry)."""
    path = draft.path
    kind = draft.kind
    n = draft.msg
    f: dict[str, Any] = {}
    retry = default_retry
    if kind in _TAKES_TIMEOUT:
        f["timeout"] = default_timeout
    if not draft.bare:
        # One C call tells which fields are set.
        present = {fd.name: value for fd, value in n.ListFields()}
        retry = _policy(c, kind, n, present, path, f, default_retry)

    cls: type[NodePlan]
    step_cls = _STEP_NODES.get(kind or "pass")
    if step_cls is not None:
        # A node naming no kind was reported (DagCompiler._drafts); it stands as a pass node
        # so that its other fields are still checked.
        if not kind:
            step = _stand_in_step(path)
        elif kind in DOC_KINDS:  # its call's fields are read from the stored form
            step = c.step(n, kind, path, BASE_NAMES, doc=draft.doc[kind])
        else:
            step = c.step(n, kind, path, BASE_NAMES, body=getattr(n, _MEMBERS[kind]))
        f["step"] = step
        if kind == "tool" and is_irreversible(step):
            f["irreversible"] = True
            retry = at_most_once(retry)
        if draft.bare and len(f) == 2:  # its call and its timeout: built with no dict of fields
            node = new_plan(step_cls)  # (see new_plan)
            step_cls.__init__(
                node,
                id=draft.id,
                index=draft.index,
                path=path,
                incoming=tuple(draft.incoming),
                outgoing=tuple(draft.outgoing),
                retry=retry,
                names=step.names,  # the call is all that reads anything
                node_refs=step.node_refs,
                sink=not draft.outgoing,
                timeout=f["timeout"],
                step=step,
            )
            return cast(NodePlan, node)
        cls = cast(type[NodePlan], step_cls)
    elif kind == "map":
        cls = MapNode
        f.update(_map(c, n.map, f"{path}.map"))
    elif kind == "switch":
        cls = SwitchNode
        f.update(_switch(c, n.switch_node, path))
    elif kind == "wait":
        cls = WaitNode
        f.update(_wait(c, n.wait, f"{path}.wait"))
    else:
        cls = AggregateNode
        f.update(_aggregate(c, n.aggregate, path, bool(draft.incoming)))
    if draft.bare and step_cls is not None:  # the call is all that reads anything
        names, refs = f["step"].names, f["step"].node_refs
    else:
        names, refs = _names(f)
    return cls(
        id=draft.id,
        index=draft.index,
        path=path,
        incoming=tuple(draft.incoming),
        outgoing=tuple(draft.outgoing),
        retry=retry,
        names=names,
        node_refs=refs,
        sink=not draft.outgoing,
        **f,
    )


def _policy(
    c: StepCompiler,
    kind: str | None,
    n: Any,
    present: dict[str, Any],
    path: str,
    f: dict[str, Any],
    retry: RetrySpec,
) -> RetrySpec:
    """The fields every node may set (when, join, timeouts, retry, transforms, compensation,
    rate limit, priority, on_exhausted) into `f`; returns the node's retry policy."""
    if "when" in present:
        f["when"] = c.boolean(present["when"], f"{path}.when", BASE_NAMES)
    if "join" in present:
        f["join_all"] = present["join"] == pb.Node.JOIN_ALL
    if "timeout" in present:
        f["timeout"] = c.duration(n, "timeout", path)
        if kind not in _TAKES_TIMEOUT:
            c.error(
                f"{path}.timeout",
                f"a {kind} node takes no timeout"
                + (" (use wait.timeout)" if kind == "wait" else ""),
            )
    if "total_timeout" in present:
        f["total_timeout"] = c.duration(n, "total_timeout", path)
    if "retry" in present:
        retry = c.retry(present["retry"], f"{path}.retry")
    if "output" in present:
        f["output"] = c.template(value_to_py(present["output"]), f"{path}.output", WITH_OUTPUT)
    if "export_vars" in present:
        f["export"] = {
            key: c.template(value_to_py(value), f"{path}.export.{key}", WITH_OUTPUT)
            for key, value in present["export_vars"].fields.items()
        }
    if "compensate" in present:
        f["compensate"] = c.standalone_step(
            present["compensate"], f"{path}.compensate", WITH_OUTPUT
        )
    if "rate_limit" in present:
        f["rate_limit"] = present["rate_limit"]
    if "priority" in present:
        f["priority"] = present["priority"]
    if present.get("on_exhausted") == pb.Budget.ON_EXHAUSTED_PAUSE:
        f["on_exhausted"] = "pause"
        if kind not in ("agent", "tool", "workflow"):
            c.error(
                f"{path}.on_exhausted",
                f"a {kind} node cannot pause on failure (agent, tool and workflow nodes can)",
            )
    return retry


def _names(f: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The names the node's expressions and calls read, and the nodes they refer to. A single
    source's sets are shared, not copied (a 10,000-node plan holds 20,000 of them)."""
    sources: list[Any] = [x for x in _expressions(f)]
    for key in ("step", "body", "compensate"):
        part = f.get(key)
        if part is not None:
            sources.append(part)
    names = refs = NO_NAMES
    for x in sources:
        if x.names:
            names = names | x.names if names else x.names
        if x.node_refs:
            refs = refs | x.node_refs if refs else x.node_refs
    return names, refs


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
            cases.append(SwitchCase(when=expr, target=case.target))
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
    if not f.keys() - _NO_EXPRESSIONS:
        return []
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
