"""Validation and compilation: WorkflowSpec -> `DagPlan | MachinePlan`, or every problem at once.

Each problem is a Diagnostic with the field path a user can find in their file
(`nodes[2].when`). The compiler never stops at the first problem: a workflow author
fixes a file in one round trip. `compile_workflow` is the one entry: it refuses values no field
may hold, then sends a DAG to `DagCompiler` (this module: nodes, edges, order, handlers,
breakers; one node at a time in agentrun/engine/node_compiler.py) and a state machine to
agentrun/engine/machine/compiler.py. Both read steps, retries and durations through one
`StepCompiler` (agentrun/engine/step_compiler.py).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from agentrun.engine.budgets import budget_from_spec
from agentrun.engine.dag_graph import Ancestry, Draft, link, run_order
from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.engine.expressions import normalize_numbers
from agentrun.engine.loader import spec_to_dict
from agentrun.engine.machine.compiler import compile_machine
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.message_checks import check_message, checked_dict
from agentrun.engine.node_compiler import (
    BASE_NAMES,
    DOC_KINDS,
    NODE_KINDS,
    WITH_OUTPUT,
    compile_node,
    self_ref_problem,
)
from agentrun.engine.plan import BreakerSpec, DagPlan, EdgePlan, HandlerPlan, NodePlan, new_plan
from agentrun.engine.ports import AgentProviders, ToolRegistry
from agentrun.engine.retry import RetrySpec
from agentrun.engine.step_compiler import StepCompiler, did_you_mean, struct_to_py, value_to_py
from agentrun.v1 import workflow_pb2 as pb

NODE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
# CEL reserved words and literals: an id spelled like one could not be referenced.
RESERVED_IDS = frozenset(
    [
        "as",
        "break",
        "const",
        "continue",
        "else",
        "false",
        "for",
        "function",
        "if",
        "import",
        "in",
        "let",
        "loop",
        "package",
        "namespace",
        "null",
        "return",
        "true",
        "var",
        "void",
        "while",
    ]
)
WORKFLOW_OUTPUT = frozenset({"input", "nodes", "vars", "execution"})
_KIND_WORDS = frozenset(kind for kind in NODE_KINDS.values())

_ACTIONS = {
    pb.ErrorHandler.ACTION_RETRY: "retry",
    pb.ErrorHandler.ACTION_SKIP: "skip",
    pb.ErrorHandler.ACTION_FALLBACK: "fallback",
    pb.ErrorHandler.ACTION_COMPENSATE: "compensate",
    pb.ErrorHandler.ACTION_ESCALATE: "escalate",
}
_ON_TIMEOUT = {
    pb.ErrorHandler.ON_TIMEOUT_UNSPECIFIED: "fail",
    pb.ErrorHandler.ON_TIMEOUT_FAIL: "fail",
    pb.ErrorHandler.ON_TIMEOUT_SKIP: "skip",
    pb.ErrorHandler.ON_TIMEOUT_RETRY: "retry",
}
_ON_LIMIT = {
    pb.Concurrency.ON_LIMIT_UNSPECIFIED: "queue",
    pb.Concurrency.ON_LIMIT_QUEUE: "queue",
    pb.Concurrency.ON_LIMIT_CANCEL_NEWEST: "cancel_newest",
    pb.Concurrency.ON_LIMIT_CANCEL_OLDEST: "cancel_oldest",
}
_COMPENSATION = {
    pb.Compensation.STRATEGY_UNSPECIFIED: "reverse",
    pb.Compensation.STRATEGY_REVERSE: "reverse",
    pb.Compensation.STRATEGY_SEQUENTIAL: "sequential",
    pb.Compensation.STRATEGY_PARALLEL: "parallel",
}


def compile_workflow(
    spec: pb.WorkflowSpec, *, tools: ToolRegistry, agents: AgentProviders
) -> DagPlan | MachinePlan:
    """Validates `spec` and compiles it; raises InvalidWorkflow with every problem found.

    A DAG gives a `DagPlan`, `mode: state_machine` a `MachinePlan`: callers `match` on the two."""
    return compile_stored(spec, tools=tools, agents=agents)[0]


def compile_stored(
    spec: pb.WorkflowSpec, *, tools: ToolRegistry, agents: AgentProviders
) -> tuple[DagPlan | MachinePlan, dict[str, Any]]:
    """`compile_workflow`'s plan and the spec's stored form (`spec_to_dict`).

    Values no field may hold (unknown enum numbers, NaN, mixed-sign durations, NUL characters)
    are refused first, in the walk that builds the stored form (`checked_dict`; a spec it
    doubts is checked by `check_message`, which says what and where): the compilers below may
    then trust every enum and number. The DAG compiler reads each node's id, needs, kind and
    plain values from that form, which costs no protobuf access (a 10,000-node spec spent
    ~40% of its compile reading them from the messages)."""
    stored = checked_dict(spec)
    if stored is None:
        problems = check_message(spec)
        if problems:
            raise InvalidWorkflow(problems)
        stored = spec_to_dict(spec)
    if spec.mode == pb.WorkflowSpec.MODE_STATE_MACHINE:
        return compile_machine(spec, tools=tools, agents=agents), stored
    return DagCompiler(spec, tools, agents, stored.get("nodes", [])).compile(), stored


class DagCompiler:
    """A DAG spec → `DagPlan`: one use per spec."""

    def __init__(
        self,
        spec: pb.WorkflowSpec,
        tools: ToolRegistry,
        agents: AgentProviders,
        docs: list[dict[str, Any]],
    ) -> None:
        """`docs`: the stored form of each of `spec.nodes` (`spec_to_dict(spec)["nodes"]`)."""
        self.spec = spec
        self.docs = docs
        self.c = StepCompiler(tools, agents)
        self._node_ids: set[str] = set()

    def compile(self) -> DagPlan:
        spec, c = self.spec, self.c
        c.check_name(spec.name)
        if spec.mode == pb.WorkflowSpec.MODE_STATE_MACHINE:
            raise AssertionError("compile_workflow sends state machines to compile_machine")
        if not spec.nodes:
            c.error("nodes", "a workflow needs at least one node")

        input_schema = (
            c.schema(spec.input_schema, "input_schema") if spec.HasField("input_schema") else None
        )
        default_retry = (
            c.retry(spec.defaults.retry, "defaults.retry")
            if spec.defaults.HasField("retry")
            else RetrySpec()
        )
        default_timeout = c.duration(spec.defaults, "timeout", "defaults")

        drafts = self._drafts()
        self._edges(drafts)
        self._node_ids = set(drafts)
        order, stages = run_order(drafts, c.error)
        anc = Ancestry(drafts, order) if order is not None else None

        nodes: dict[str, NodePlan] = {}
        for node_id, draft in drafts.items():
            plan = compile_node(c, draft, default_retry, default_timeout)
            nodes[node_id] = plan
            if plan.node_refs:
                self._check_refs(set(plan.node_refs), plan.id, anc, plan.path)
                if plan.id in plan.node_refs:
                    problem = self_ref_problem(plan)
                    if problem is not None:
                        c.error(plan.path, problem)
        for draft in drafts.values() if spec.edges else ():  # only `edges` have expressions
            for edge in draft.outgoing:
                if edge.when is None and edge.input is None:
                    continue
                refs: set[str] = set()
                for t in (edge.when, edge.input):
                    if t is not None:
                        refs |= t.node_refs
                if refs:
                    self._check_refs(refs, edge.source, anc, _edge_path(spec, edge))

        output = None
        if spec.HasField("output"):
            output = c.template(value_to_py(spec.output), "output", WORKFLOW_OUTPUT)
            for ref in sorted(output.node_refs - set(nodes)):
                c.error("output", f"unknown node {ref!r}")

        concurrency_key = None
        if spec.HasField("concurrency"):
            if not spec.concurrency.key:
                c.error("concurrency.key", "is required")
            else:
                concurrency_key = c.template(
                    spec.concurrency.key, "concurrency.key", frozenset({"input"})
                )
            if spec.concurrency.limit < 1:
                c.error("concurrency.limit", "must be at least 1")

        handlers = [self._handler(j, h) for j, h in enumerate(spec.error_handlers)]
        breakers = {
            name: self._breaker(name, b, f"circuit_breakers.{name}")
            for name, b in spec.circuit_breakers.items()
        }

        self._vars_warnings(nodes, anc)
        timeout = c.duration(spec, "timeout", "") if spec.HasField("timeout") else None
        budget = budget_from_spec(spec.budget, c.error) if spec.HasField("budget") else None

        if c.diags:
            raise InvalidWorkflow(c.diags)
        return DagPlan(
            name=spec.name,
            spec=spec,
            nodes=nodes,
            order=order or [],
            roots=[nid for nid in (order or []) if not nodes[nid].incoming],
            stages=stages or [],
            output=output,
            timeout=timeout,
            input_schema=input_schema,
            warnings=c.warnings,
            concurrency_key=concurrency_key,
            concurrency_limit=spec.concurrency.limit if spec.HasField("concurrency") else 0,
            concurrency_on_limit=_ON_LIMIT[spec.concurrency.on_limit],
            handlers=[h for h in handlers if h is not None],
            compensation=_COMPENSATION[spec.compensation.strategy],
            breakers=breakers,
            budget=budget,
        )

    # -- nodes and edges ------------------------------------------------------------
    def _drafts(self) -> dict[str, Draft]:
        """A draft per node with a usable id, holding its stored form (and its message, unless
        compile_node needs none: bare nodes whose call it reads from the stored form)."""
        c = self.c
        drafts: dict[str, Draft] = {}
        match_id = NODE_ID_RE.match
        messages = self.spec.nodes
        for i, doc in enumerate(self.docs):
            path = f"nodes[{i}]"
            node_id = doc.get("id", "")
            if not node_id:
                c.error(f"{path}.id", "is required")
                continue
            # Most ids pass the cheap test; the others get the regex's answer (~2.5k
            # instructions a call: 3% of a 10,000-node compile).
            if not (
                "a" <= node_id[0] <= "z" and len(node_id) < 64 and not node_id.strip(_ID_CHARS)
            ) and not match_id(node_id):
                c.error(f"{path}.id", f"{node_id!r} must match [a-z][a-z0-9_]* (at most 63)")
                continue
            if node_id in RESERVED_IDS:
                c.error(f"{path}.id", f"{node_id!r} is a reserved word in expressions")
                continue
            if node_id in drafts:
                c.error(f"{path}.id", f"duplicate id {node_id!r} (first at {drafts[node_id].path})")
                continue
            # The stored form lists the fields set, the kind among them under its word.
            kind = None
            bare = True
            for key in doc:
                if key in _KIND_WORDS:
                    kind = key
                elif key != "id" and key != "needs":
                    bare = False
            if kind is None:
                c.error(
                    path,
                    "needs exactly one kind: agent, tool, map, switch, wait, aggregate, workflow or pass",
                )
            msg = None if bare and kind in DOC_KINDS else messages[i]
            drafts[node_id] = Draft(node_id, i, kind, path, doc, msg, bare, [], [])
        return drafts

    def _edges(self, nodes: dict[str, Draft]) -> None:
        """Edges from `needs`, from `edges` and from switch targets, in that order."""
        c = self.c
        for node_id, draft in nodes.items():
            needs = draft.doc.get("needs")
            if not needs:
                continue
            incoming = draft.incoming
            seen: set[str] = set()
            for j, src in enumerate(needs):
                source = nodes.get(src)
                if source is None:
                    c.error(
                        f"{draft.path}.needs[{j}]",
                        f"unknown node {src!r}{did_you_mean(src, nodes)}",
                    )
                elif src == node_id:
                    c.error(f"{draft.path}.needs[{j}]", "a node cannot need itself")
                elif src in seen:
                    c.error(f"{draft.path}.needs[{j}]", f"{src!r} is listed twice")
                else:
                    seen.add(src)
                    edge = new_plan(EdgePlan)
                    EdgePlan.__init__(edge, source=src, target=node_id)
                    source.outgoing.append(edge)
                    incoming.append(edge)
        for j, e in enumerate(self.spec.edges):
            src, dst = e.from_node, e.to
            path = f"edges[{j}]"
            ok = True
            for field_name, ref in (("from", src), ("to", dst)):
                if not ref:
                    c.error(f"{path}.{field_name}", "is required")
                    ok = False
                elif ref not in nodes:
                    c.error(
                        f"{path}.{field_name}", f"unknown node {ref!r}{did_you_mean(ref, nodes)}"
                    )
                    ok = False
            if ok and src == dst:
                c.error(path, "an edge cannot connect a node to itself")
                ok = False
            if not ok:
                continue
            when = c.boolean(e.when, f"{path}.when", WITH_OUTPUT) if e.when else None
            mapped = (
                c.template(value_to_py(e.input), f"{path}.input", WITH_OUTPUT)
                if e.HasField("input")
                else None
            )
            link(nodes, EdgePlan(source=src, target=dst, when=when, input=mapped))
        for node_id, draft in nodes.items():
            if draft.kind == "switch":
                self._switch_edges(nodes, node_id, draft.msg.switch_node)

    def _switch_edges(self, nodes: dict[str, Draft], node_id: str, sw: Any) -> None:
        c = self.c
        path = f"{nodes[node_id].path}.switch"
        if not sw.cases and not sw.default_target:
            c.error(path, "needs at least one case or a default")
        targets: list[tuple[str, str]] = [
            (case.target, f"{path}.cases[{k}].goto") for k, case in enumerate(sw.cases)
        ]
        if sw.default_target:
            targets.append((sw.default_target, f"{path}.default"))
        linked: set[str] = set()
        for target, tpath in targets:
            if not target:
                c.error(tpath, "is required")
            elif target not in nodes:
                c.error(tpath, f"unknown node {target!r}{did_you_mean(target, nodes)}")
            elif target == node_id:
                c.error(tpath, "a switch cannot go to itself")
            elif target not in linked:
                linked.add(target)
                link(nodes, EdgePlan(source=node_id, target=target, from_switch=True))

    def _check_refs(self, refs: set[str], node_id: str, anc: Ancestry | None, path: str) -> None:
        """Expressions may read ancestors only (their output exists by then); the node itself
        is checked by `self_ref_problem`. Without an order (a cycle) only unknown ids are
        reported, so a cycle hides no other problem."""
        for ref in sorted(refs):
            if ref == node_id:
                continue
            if ref not in self._node_ids:
                self.c.error(path, f"unknown node {ref!r} in an expression")
            elif anc is not None and not anc.is_ancestor(ref, node_id):
                self.c.error(
                    path,
                    f"node {ref!r} is not an ancestor of {node_id!r}, so its output may not exist yet",
                )

    def _vars_warnings(self, nodes: dict[str, NodePlan], anc: Ancestry | None) -> None:
        writers: dict[str, list[str]] = defaultdict(list)
        for plan in nodes.values():
            for key in plan.export or ():
                writers[key].append(plan.id)
        if anc is None:
            return
        for key, ids in writers.items():
            for i, a in enumerate(ids):
                for b in ids[i + 1 :]:
                    if not anc.is_ancestor(a, b) and not anc.is_ancestor(b, a):
                        self.c.warnings.append(
                            Diagnostic(
                                f"{nodes[b].path}.export.{key}",
                                f"{a!r} and {b!r} both set vars.{key} with no order between them: the last to finish wins",
                            )
                        )

    # -- handlers and breakers ---------------------------------------------------------
    def _handler(self, j: int, h: Any) -> HandlerPlan | None:
        c = self.c
        path = f"error_handlers[{j}]"
        pattern = None
        if h.match.nodes:
            try:
                pattern = re.compile(h.match.nodes)
            except re.error as exc:
                c.error(f"{path}.match.nodes", f"bad regex: {exc}")
        action = _ACTIONS.get(h.action)
        if action is None:
            c.error(f"{path}.action", "is required: retry, skip, fallback, compensate or escalate")
            return None
        f: dict[str, Any] = {}
        if action == "retry":
            if not h.HasField("retry"):
                c.error(f"{path}.retry", "is required for action retry")
            else:
                f["retry"] = c.retry(h.retry, f"{path}.retry")
        elif h.HasField("retry"):
            c.error(f"{path}.retry", "is only used with action retry")
        if h.HasField("output"):
            if action != "skip":
                c.error(f"{path}.output", "is only used with action skip")
            f["output"] = c.template(value_to_py(h.output), f"{path}.output", BASE_NAMES)
        if action == "fallback":
            if not h.HasField("fallback"):
                c.error(f"{path}.fallback", "is required for action fallback")
            else:
                f["fallback"] = c.standalone_step(h.fallback, f"{path}.fallback", BASE_NAMES)
        elif h.HasField("fallback"):
            c.error(f"{path}.fallback", "is only used with action fallback")
        if h.HasField("timeout"):
            if action != "escalate":
                c.error(f"{path}.timeout", "is only used with action escalate")
            f["timeout"] = c.duration(h, "timeout", path)
        if h.on_timeout and action != "escalate":
            c.error(f"{path}.on_timeout", "is only used with action escalate")
        return HandlerPlan(
            index=j,
            path=path,
            node_pattern=pattern,
            errors=tuple(h.match.errors),
            action=action,
            on_timeout=_ON_TIMEOUT[h.on_timeout],
            **f,
        )

    def _breaker(self, name: str, b: Any, path: str) -> BreakerSpec:
        c = self.c
        if c.tools.get(name) is None and c.agents.get(name) is None:
            c.error(path, f"{name!r} is neither a registered tool nor an agent provider")
        if b.failure_threshold < 0 or b.half_open_calls < 0:
            c.error(path, "failure_threshold and half_open_calls must not be negative")
        default = BreakerSpec()
        return BreakerSpec(
            failure_threshold=b.failure_threshold or default.failure_threshold,
            window=c.duration(b, "window", path) or default.window,
            reset_timeout=c.duration(b, "reset_timeout", path) or default.reset_timeout,
            half_open_calls=b.half_open_calls or default.half_open_calls,
        )


def _edge_path(spec: pb.WorkflowSpec, edge: EdgePlan) -> str:
    for j, e in enumerate(spec.edges):
        if e.from_node == edge.source and e.to == edge.target:
            return f"edges[{j}]"
    return f"edge {edge.source} -> {edge.target}"


__all__ = [
    "DagCompiler",
    "compile_stored",
    "compile_workflow",
    "normalize_numbers",
    "struct_to_py",
    "value_to_py",
]
