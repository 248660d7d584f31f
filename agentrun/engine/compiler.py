"""Validation and compilation: WorkflowSpec -> Plan, or every problem at once.

Each problem is a Diagnostic with the field path a user can find in their file
(`nodes[2].when`). The compiler never stops at the first problem: a workflow author
fixes a file in one round trip.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from typing import Any

import jsonschema

from agentrun import spec_words
from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.engine.expr_checks import secret_diagnostics, sql_query_warnings
from agentrun.engine.expressions import (
    Expression,
    ExpressionError,
    Template,
    _strip_strings,
    compile_bool,
    compile_template_collect,
    normalize_numbers,
)
from agentrun.engine.message_checks import check_message
from agentrun.engine.plan import (
    BreakerSpec,
    EdgePlan,
    HandlerPlan,
    NodePlan,
    Plan,
    StepPlan,
    SwitchCase,
)
from agentrun.engine.ports import AgentProviders, Effect, ToolRegistry
from agentrun.engine.retry import Backoff, Jitter, RetrySpec
from agentrun.v1 import workflow_pb2 as pb

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NODE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# CEL reserved words and literals: an id spelled like one could not be referenced.
RESERVED_IDS = frozenset(
    ["as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while"]
)

BASE_NAMES = frozenset({"input", "nodes", "vars", "execution", "secrets"})
WITH_OUTPUT = BASE_NAMES | {"output"}
IN_MAP = BASE_NAMES | {"item", "index"}
WORKFLOW_OUTPUT = frozenset({"input", "nodes", "vars", "execution"})

_BACKOFF = {
    pb.RetryPolicy.BACKOFF_UNSPECIFIED: Backoff.EXPONENTIAL,
    pb.RetryPolicy.BACKOFF_FIXED: Backoff.FIXED,
    pb.RetryPolicy.BACKOFF_LINEAR: Backoff.LINEAR,
    pb.RetryPolicy.BACKOFF_EXPONENTIAL: Backoff.EXPONENTIAL,
}
_JITTER = {
    pb.RetryPolicy.JITTER_UNSPECIFIED: Jitter.NONE,
    pb.RetryPolicy.JITTER_NONE: Jitter.NONE,
    pb.RetryPolicy.JITTER_FULL: Jitter.FULL,
    pb.RetryPolicy.JITTER_EQUAL: Jitter.EQUAL,
}
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
_STRATEGY = {
    pb.AggregateNode.STRATEGY_UNSPECIFIED: "merge",
    pb.AggregateNode.STRATEGY_MERGE: "merge",
    pb.AggregateNode.STRATEGY_CONCAT: "concat",
    pb.AggregateNode.STRATEGY_FIRST: "first",
    pb.AggregateNode.STRATEGY_VOTE: "vote",
    pb.AggregateNode.STRATEGY_EXPR: "expr",
}


def value_to_py(value: Any) -> Any:
    """A protobuf Value as a JSON value, integral numbers as int (FORMAT.md, Expressions)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_py(value.struct_value)
    if kind == "list_value":
        return [value_to_py(v) for v in value.list_value.values]
    return None


def struct_to_py(struct: Any) -> dict[str, Any]:
    return {k: value_to_py(v) for k, v in struct.fields.items()}


def _seconds(duration: Any) -> float:
    return duration.seconds + duration.nanos / 1e9


class _Compiler:
    def __init__(self, spec: pb.WorkflowSpec, tools: ToolRegistry, agents: AgentProviders) -> None:
        self.spec = spec
        self.tools = tools
        self.agents = agents
        self.diags: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: str, message: str) -> None:
        self.diags.append(Diagnostic(path, message))

    # -- expressions ------------------------------------------------------
    def template(
        self, value: Any, path: str, allowed: frozenset[str], *, secrets_ok: bool = False
    ) -> Template:
        """`secrets_ok`: a field whose value is sent, never stored (tool args, agent prompt)."""
        errors: list[ExpressionError] = []
        t = compile_template_collect(value, path, allowed, errors)
        for e in errors:
            self.error(e.path, e.message)
        self.diags.extend(secret_diagnostics(t.expressions, secrets_ok))
        return t

    def boolean(self, source: str, path: str, allowed: frozenset[str]) -> Expression | None:
        try:
            return self.expression(compile_bool(source, path, allowed))
        except ExpressionError as e:
            self.error(e.path, e.message)
            return None

    def expression(self, expr: Expression) -> Expression:
        """A bare expression field (`when`, `items`, `expr`): never one that may read secrets."""
        self.diags.extend(secret_diagnostics([expr], False))
        return expr

    def duration(self, msg: Any, name: str, path: str, *, allow_zero: bool = False) -> float | None:
        if not msg.HasField(name):
            return None
        seconds = _seconds(getattr(msg, name))
        if seconds < 0 or (seconds == 0 and not allow_zero):
            self.error(f"{path}.{name}" if path else name, "must be a positive duration")
            return None
        return seconds

    def schema(self, struct: Any, path: str) -> dict[str, Any] | None:
        schema = struct_to_py(struct)
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in exc.path)
            self.error(path + where, f"not a valid JSON Schema: {exc.message}")
            return None
        return schema

    def retry(self, policy: Any, path: str, base: RetrySpec | None = None) -> RetrySpec:
        base = base or RetrySpec()
        if policy.max_attempts < 0:
            self.error(f"{path}.max_attempts", "must be at least 1")
        if policy.multiplier and policy.multiplier < 1:
            self.error(f"{path}.multiplier", "must be at least 1")
        for name in ("initial_interval", "max_interval"):
            if policy.HasField(name) and _seconds(getattr(policy, name)) < 0:
                self.error(f"{path}.{name}", "must not be negative")
        return RetrySpec(
            max_attempts=policy.max_attempts or base.max_attempts,
            backoff=_BACKOFF[policy.backoff] if policy.backoff else base.backoff,
            initial_interval=_seconds(policy.initial_interval)
            if policy.HasField("initial_interval")
            else base.initial_interval,
            max_interval=_seconds(policy.max_interval)
            if policy.HasField("max_interval")
            else base.max_interval,
            multiplier=policy.multiplier or base.multiplier,
            jitter=_JITTER[policy.jitter] if policy.jitter else base.jitter,
            non_retryable=frozenset(policy.non_retryable) or base.non_retryable,
        )

    # -- steps (tool, agent, pass, workflow) ----------------------------------
    def step(self, msg: Any, kind: str, path: str, allowed: frozenset[str]) -> StepPlan:
        """`kind` is the file word of the set member of `msg.kind` (`pass`, not `pass_node`)."""
        body = spec_words.member(msg)
        step = StepPlan(kind=kind, path=f"{path}.{kind}")
        p = step.path
        if kind == "pass":
            step.value = self.template(
                value_to_py(body.value) if body.HasField("value") else None, f"{p}.value", allowed
            )
        elif kind == "tool":
            if not body.name:
                self.error(f"{p}.name", "is required")
            else:
                step.tool = self.tools.get(body.name)
                if step.tool is None:
                    self.error(f"{p}.name", f"unknown tool {body.name!r}{_known(self.tools.names())}")
            args = value_to_py(body.args) if body.HasField("args") else {}
            step.args = self.template(args, f"{p}.args", allowed, secrets_ok=True)
            self.warnings.extend(sql_query_warnings(body.name, args, f"{p}.args"))
            if step.tool is not None and step.tool.args_schema and step.args.is_constant:
                try:
                    jsonschema.validate(step.args.constant, step.tool.args_schema)
                except jsonschema.ValidationError as exc:
                    where = "".join(f".{x}" if isinstance(x, str) else f"[{x}]" for x in exc.path)
                    self.error(f"{p}.args{where}", exc.message)
        elif kind == "agent":
            provider_name, _, model = body.model.partition("/")
            if not body.model or not model:
                self.error(f"{p}.model", "must be provider/model, such as mock/echo")
            else:
                step.provider = self.agents.get(provider_name)
                if step.provider is None:
                    self.error(f"{p}.model", f"unknown agent provider {provider_name!r}")
                elif not step.provider.knows_model(model):
                    self.error(f"{p}.model", f"provider {provider_name!r} has no model {model!r}")
            step.model = model
            step.prompt = self.template(body.prompt, f"{p}.prompt", allowed, secrets_ok=True)
            step.system = self.template(body.system, f"{p}.system", allowed, secrets_ok=True)
            if body.HasField("output_schema"):
                step.output_schema = self.schema(body.output_schema, f"{p}.output_schema")
            step.agent_tools = tuple(body.tools)
            for i, name in enumerate(body.tools):
                if self.tools.get(name) is None:
                    self.error(f"{p}.tools[{i}]", f"unknown tool {name!r}")
            if body.max_turns < 0:
                self.error(f"{p}.max_turns", "must not be negative")
            step.max_turns = body.max_turns
            step.temperature = body.temperature if body.HasField("temperature") else None
            step.max_tokens = body.max_tokens
            step.stream = body.stream if body.HasField("stream") else None
        elif kind == "workflow":
            if not body.name:
                self.error(f"{p}.name", "is required")
            step.workflow = body.name
            step.workflow_version = body.version
            step.workflow_input = self.template(
                value_to_py(body.input) if body.HasField("input") else {}, f"{p}.input", allowed
            )
        return step

    def standalone_step(self, msg: Any, path: str, allowed: frozenset[str]) -> StepPlan | None:
        kind = spec_words.which(msg)
        if kind is None:
            self.error(path, "needs exactly one kind: agent, tool, pass or workflow")
            return None
        step = self.step(msg, kind, path, allowed)
        if msg.HasField("retry"):
            step.retry = self.retry(msg.retry, f"{path}.retry")
        step.timeout = self.duration(msg, "timeout", path)
        return step

    # -- the graph ----------------------------------------------------------------
    def compile(self) -> Plan:
        spec = self.spec
        if not spec.name:
            self.error("name", "is required")
        elif not NAME_RE.match(spec.name):
            self.error("name", "must be lower-case letters, digits and '-' (at most 63)")
        if spec.mode == pb.WorkflowSpec.MODE_STATE_MACHINE:
            raise AssertionError("compile_workflow sends state machines to compile_machine")
        if not spec.nodes:
            self.error("nodes", "a workflow needs at least one node")

        input_schema = (
            self.schema(spec.input_schema, "input_schema") if spec.HasField("input_schema") else None
        )
        default_retry = (
            self.retry(spec.defaults.retry, "defaults.retry") if spec.defaults.HasField("retry") else RetrySpec()
        )
        default_timeout = self.duration(spec.defaults, "timeout", "defaults")

        nodes: dict[str, NodePlan] = {}
        specs: dict[str, Any] = {}
        for i, n in enumerate(spec.nodes):
            path = f"nodes[{i}]"
            if not n.id:
                self.error(f"{path}.id", "is required")
                continue
            if not NODE_ID_RE.match(n.id):
                self.error(f"{path}.id", f"{n.id!r} must match [a-z][a-z0-9_]* (at most 63)")
                continue
            if n.id in RESERVED_IDS:
                self.error(f"{path}.id", f"{n.id!r} is a reserved word in expressions")
                continue
            if n.id in nodes:
                self.error(f"{path}.id", f"duplicate id {n.id!r} (first at {nodes[n.id].path})")
                continue
            kind = spec_words.which(n)
            if kind is None:
                self.error(
                    path,
                    "needs exactly one kind: agent, tool, map, switch, wait, aggregate, workflow or pass",
                )
            nodes[n.id] = NodePlan(id=n.id, index=i, kind=kind or "pass", path=path)
            specs[n.id] = n

        # Edges: needs, explicit edges, switch targets.
        for node_id, n in specs.items():
            plan = nodes[node_id]
            seen: set[str] = set()
            for j, src in enumerate(n.needs):
                if src not in nodes:
                    self.error(f"{plan.path}.needs[{j}]", f"unknown node {src!r}{_close(src, nodes)}")
                elif src == node_id:
                    self.error(f"{plan.path}.needs[{j}]", "a node cannot need itself")
                elif src in seen:
                    self.error(f"{plan.path}.needs[{j}]", f"{src!r} is listed twice")
                else:
                    seen.add(src)
                    self._link(nodes, EdgePlan(source=src, target=node_id))
        for j, e in enumerate(spec.edges):
            src, dst = e.from_node, e.to
            path = f"edges[{j}]"
            ok = True
            for field_name, ref in (("from", src), ("to", dst)):
                if not ref:
                    self.error(f"{path}.{field_name}", "is required")
                    ok = False
                elif ref not in nodes:
                    self.error(f"{path}.{field_name}", f"unknown node {ref!r}{_close(ref, nodes)}")
                    ok = False
            if ok and src == dst:
                self.error(path, "an edge cannot connect a node to itself")
                ok = False
            if not ok:
                continue
            edge = EdgePlan(source=src, target=dst)
            if e.when:
                edge.when = self.boolean(e.when, f"{path}.when", WITH_OUTPUT)
            if e.HasField("input"):
                edge.input = self.template(value_to_py(e.input), f"{path}.input", WITH_OUTPUT)
            self._link(nodes, edge)
        for node_id, n in specs.items():
            if n.WhichOneof("kind") != "switch_node":
                continue
            sw = n.switch_node
            plan = nodes[node_id]
            path = f"{plan.path}.switch"
            if not sw.cases and not sw.default_target:
                self.error(path, "needs at least one case or a default")
            targets: list[tuple[str, str]] = [
                (c.target, f"{path}.cases[{k}].goto") for k, c in enumerate(sw.cases)
            ]
            if sw.default_target:
                targets.append((sw.default_target, f"{path}.default"))
            linked: set[str] = set()
            for target, tpath in targets:
                if not target:
                    self.error(tpath, "is required")
                elif target not in nodes:
                    self.error(tpath, f"unknown node {target!r}{_close(target, nodes)}")
                elif target == node_id:
                    self.error(tpath, "a switch cannot go to itself")
                elif target not in linked:
                    linked.add(target)
                    self._link(nodes, EdgePlan(source=node_id, target=target, from_switch=True))

        self._node_ids = set(nodes)
        order, stages = self._order(nodes)
        anc = _Ancestry(nodes, order) if order is not None else None

        for node_id, n in specs.items():
            self._node(nodes[node_id], n, default_retry, default_timeout, anc)
        for node_id, plan in nodes.items():
            for edge in plan.outgoing:
                refs: set[str] = set()
                for t in (edge.when, edge.input):
                    if t is not None:
                        refs |= t.node_refs
                if refs:
                    self._check_refs(refs, edge.source, anc, _edge_path(spec, edge), self_ok=True)

        output = None
        if spec.HasField("output"):
            output = self.template(value_to_py(spec.output), "output", WORKFLOW_OUTPUT)
            for ref in sorted(output.node_refs - set(nodes)):
                self.error("output", f"unknown node {ref!r}")

        concurrency_key = None
        if spec.HasField("concurrency"):
            if not spec.concurrency.key:
                self.error("concurrency.key", "is required")
            else:
                concurrency_key = self.template(spec.concurrency.key, "concurrency.key", frozenset({"input"}))
            if spec.concurrency.limit < 1:
                self.error("concurrency.limit", "must be at least 1")

        handlers = [self._handler(j, h) for j, h in enumerate(spec.error_handlers)]
        breakers = {
            name: self._breaker(name, b, f"circuit_breakers.{name}")
            for name, b in spec.circuit_breakers.items()
        }

        self._vars_warnings(nodes, anc)
        timeout = self.duration(spec, "timeout", "") if spec.HasField("timeout") else None

        if self.diags:
            raise InvalidWorkflow(self.diags)
        for plan in nodes.values():
            plan.sink = not plan.outgoing
        return Plan(
            name=spec.name,
            spec=spec,
            nodes=nodes,
            order=order or [],
            roots=[nid for nid in (order or []) if not nodes[nid].incoming],
            stages=stages or [],
            output=output,
            timeout=timeout,
            input_schema=input_schema,
            warnings=self.warnings,
            concurrency_key=concurrency_key,
            concurrency_limit=spec.concurrency.limit if spec.HasField("concurrency") else 0,
            concurrency_on_limit=_ON_LIMIT[spec.concurrency.on_limit],
            handlers=[h for h in handlers if h is not None],
            compensation=_COMPENSATION[spec.compensation.strategy],
            breakers=breakers,
        )

    def _handler(self, j: int, h: Any) -> HandlerPlan | None:
        path = f"error_handlers[{j}]"
        pattern = None
        if h.match.nodes:
            try:
                pattern = re.compile(h.match.nodes)
            except re.error as exc:
                self.error(f"{path}.match.nodes", f"bad regex: {exc}")
        action = _ACTIONS.get(h.action)
        if action is None:
            self.error(f"{path}.action", "is required: retry, skip, fallback, compensate or escalate")
            return None
        handler = HandlerPlan(
            index=j,
            path=path,
            node_pattern=pattern,
            errors=tuple(h.match.errors),
            action=action,
            on_timeout=_ON_TIMEOUT[h.on_timeout],
        )
        if action == "retry":
            if not h.HasField("retry"):
                self.error(f"{path}.retry", "is required for action retry")
            else:
                handler.retry = self.retry(h.retry, f"{path}.retry")
        elif h.HasField("retry"):
            self.error(f"{path}.retry", "is only used with action retry")
        if h.HasField("output"):
            if action != "skip":
                self.error(f"{path}.output", "is only used with action skip")
            handler.output = self.template(value_to_py(h.output), f"{path}.output", BASE_NAMES)
        if action == "fallback":
            if not h.HasField("fallback"):
                self.error(f"{path}.fallback", "is required for action fallback")
            else:
                handler.fallback = self.standalone_step(h.fallback, f"{path}.fallback", BASE_NAMES)
        elif h.HasField("fallback"):
            self.error(f"{path}.fallback", "is only used with action fallback")
        if h.HasField("timeout"):
            if action != "escalate":
                self.error(f"{path}.timeout", "is only used with action escalate")
            handler.timeout = self.duration(h, "timeout", path)
        if h.on_timeout and action != "escalate":
            self.error(f"{path}.on_timeout", "is only used with action escalate")
        return handler

    def _breaker(self, name: str, b: Any, path: str) -> BreakerSpec:
        if self.tools.get(name) is None and self.agents.get(name) is None:
            self.error(path, f"{name!r} is neither a registered tool nor an agent provider")
        if b.failure_threshold < 0 or b.half_open_calls < 0:
            self.error(path, "failure_threshold and half_open_calls must not be negative")
        default = BreakerSpec()
        return BreakerSpec(
            failure_threshold=b.failure_threshold or default.failure_threshold,
            window=self.duration(b, "window", path) or default.window,
            reset_timeout=self.duration(b, "reset_timeout", path) or default.reset_timeout,
            half_open_calls=b.half_open_calls or default.half_open_calls,
        )

    @staticmethod
    def _link(nodes: dict[str, NodePlan], edge: EdgePlan) -> None:
        nodes[edge.source].outgoing.append(edge)
        nodes[edge.target].incoming.append(edge)

    def _order(self, nodes: dict[str, NodePlan]) -> tuple[list[str] | None, list[list[str]] | None]:
        """Kahn's algorithm; on a cycle, reports the nodes on it and what they block."""
        indegree = {nid: len(p.incoming) for nid, p in nodes.items()}
        level = dict.fromkeys(nodes, 0)
        queue = deque(nid for nid, d in indegree.items() if d == 0)
        order: list[str] = []
        while queue:
            nid = queue.popleft()
            order.append(nid)
            for edge in nodes[nid].outgoing:
                t = edge.target
                level[t] = max(level[t], level[nid] + 1)
                indegree[t] -= 1
                if indegree[t] == 0:
                    queue.append(t)
        if len(order) == len(nodes):
            stages: list[list[str]] = []
            for nid in order:
                lv = level[nid]
                while len(stages) <= lv:
                    stages.append([])
                stages[lv].append(nid)
            return order, stages
        remaining = {nid for nid, d in indegree.items() if d > 0}
        for cycle in _cycles(nodes, remaining):
            first = nodes[cycle[0]]
            self.error(f"{first.path}", "cycle: " + " -> ".join(cycle + [cycle[0]]))
        on_cycles = {nid for c in _cycles(nodes, remaining) for nid in c}
        for nid in sorted(remaining - on_cycles, key=lambda x: nodes[x].index):
            self.error(nodes[nid].path, f"node {nid!r} is unreachable from any root (it follows a cycle)")
        return None, None

    def _node(
        self,
        plan: NodePlan,
        n: Any,
        default_retry: RetrySpec,
        default_timeout: float | None,
        anc: _Ancestry | None,
    ) -> None:
        path = plan.path
        kind = spec_words.which(n)
        # One C call tells which fields are set; most nodes set few of them.
        present = {fd.name for fd, _ in n.ListFields()}
        names: set[str] = set()
        refs: set[str] = set()
        if "when" in present:
            plan.when = self.boolean(n.when, f"{path}.when", BASE_NAMES)
            if plan.when is not None:
                names |= plan.when.names
                refs |= plan.when.node_refs
        if "join" in present:
            plan.join_all = n.join == pb.Node.JOIN_ALL
        takes_timeout = kind in ("agent", "tool", "pass", "map")
        if "timeout" in present:
            plan.timeout = self.duration(n, "timeout", path)
            if not takes_timeout:
                self.error(f"{path}.timeout", f"a {kind} node takes no timeout" + (
                    " (use wait.timeout)" if kind == "wait" else ""))
        elif takes_timeout:
            plan.timeout = default_timeout
        if "total_timeout" in present:
            plan.total_timeout = self.duration(n, "total_timeout", path)
        plan.retry = self.retry(n.retry, f"{path}.retry") if "retry" in present else default_retry
        if "output" in present:
            plan.output = self.template(value_to_py(n.output), f"{path}.output", WITH_OUTPUT)
        if "export_vars" in present:
            plan.export = {
                key: self.template(value_to_py(value), f"{path}.export.{key}", WITH_OUTPUT)
                for key, value in n.export_vars.fields.items()
            }
        if "compensate" in present:
            plan.compensate = self.standalone_step(n.compensate, f"{path}.compensate", WITH_OUTPUT)
        if "rate_limit" in present:
            plan.rate_limit = n.rate_limit
        if "priority" in present:
            plan.priority = n.priority

        if kind in ("agent", "tool", "pass", "workflow"):
            plan.step = self.step(n, kind, path, BASE_NAMES)
            plan.inline = kind == "pass"
            if kind == "tool" and plan.step.tool is not None and plan.step.tool.effect is Effect.IRREVERSIBLE:
                plan.irreversible = True
                plan.retry = RetrySpec(
                    max_attempts=1,
                    backoff=plan.retry.backoff,
                    non_retryable=plan.retry.non_retryable,
                )
        elif kind == "map":
            m = n.map
            mpath = f"{path}.map"
            if not m.items:
                self.error(f"{mpath}.items", "is required")
            else:
                try:
                    plan.items = self.expression(Expression(_unwrap(m.items), f"{mpath}.items", BASE_NAMES))
                except ExpressionError as e:
                    self.error(e.path, e.message)
            if m.max_concurrency < 0:
                self.error(f"{mpath}.max_concurrency", "must not be negative")
            plan.max_concurrency = m.max_concurrency
            has_node, has_wf = m.HasField("node"), m.HasField("workflow")
            if has_node == has_wf:
                self.error(mpath, "needs exactly one of node or workflow")
            elif has_node:
                plan.body = self.standalone_step(m.node, f"{mpath}.node", IN_MAP)
            else:
                holder = pb.Step(workflow=m.workflow)
                plan.body = self.step(holder, "workflow", mpath, IN_MAP)
        elif kind == "switch":
            sw = n.switch_node
            cases = []
            for k, c in enumerate(sw.cases):
                if not c.when:
                    self.error(f"{path}.switch.cases[{k}].when", "is required")
                    continue
                expr = self.boolean(c.when, f"{path}.switch.cases[{k}].when", BASE_NAMES)
                if expr is not None:
                    cases.append(SwitchCase(expr, c.target))
            plan.cases = tuple(cases)
            plan.default = sw.default_target
            plan.inline = True
        elif kind == "wait":
            w = n.wait
            wpath = f"{path}.wait"
            given = [x for x in ("signal", "duration", "until") if (
                w.HasField(x) if x == "duration" else bool(getattr(w, x)))]
            if len(given) != 1:
                self.error(wpath, "needs exactly one of signal, duration or until")
            plan.signal = w.signal
            plan.duration = self.duration(w, "duration", wpath, allow_zero=True)
            if w.until:
                plan.until = self.template(w.until, f"{wpath}.until", BASE_NAMES)
            plan.wait_timeout = self.duration(w, "timeout", wpath)
        elif kind == "aggregate":
            a = n.aggregate
            plan.strategy = _STRATEGY[a.strategy]
            if plan.strategy == "expr":
                if not a.expr:
                    self.error(f"{path}.aggregate.expr", "is required for strategy expr")
                else:
                    try:
                        plan.expr = self.expression(
                            Expression(_unwrap(a.expr), f"{path}.aggregate.expr", BASE_NAMES | {"outputs"})
                        )
                    except ExpressionError as e:
                        self.error(e.path, e.message)
            elif a.expr:
                self.error(f"{path}.aggregate.expr", "is only used with strategy expr")
            if not plan.incoming:
                self.error(f"{path}.aggregate", "needs at least one incoming edge")
            plan.inline = True

        for part in (plan.step, plan.body, plan.compensate):
            if part is not None:
                names |= part.names
                refs |= part.node_refs
        for t in (plan.output, plan.until, *(plan.export or {}).values()):
            if t is not None:
                names |= t.names
                refs |= t.node_refs
        for expr in (plan.items, plan.expr, *(c.when for c in plan.cases)):
            if expr is not None:
                names |= expr.names
                refs |= expr.node_refs
        if names:
            plan.names = frozenset(names)
        if refs:
            plan.node_refs = frozenset(refs)
            self._check_refs(refs, plan.id, anc, path, self_ok=False)
            if plan.id in refs:
                self._check_self_refs(plan, path)

    def _check_refs(
        self, refs: set[str], node_id: str, anc: _Ancestry | None, path: str, self_ok: bool
    ) -> None:
        """Expressions may read ancestors only (their output exists by then); the node itself
        is checked by `_check_self_refs`. Without an order (a cycle) only unknown ids are
        reported, so a cycle hides no other problem."""
        for ref in sorted(refs):
            if ref == node_id:
                continue
            if ref not in self._node_ids:
                self.error(path, f"unknown node {ref!r} in an expression")
            elif anc is not None and not anc.is_ancestor(ref, node_id):
                self.error(path, f"node {ref!r} is not an ancestor of {node_id!r}, so its output may not exist yet")

    def _check_self_refs(self, plan: NodePlan, path: str) -> None:
        """A node may read its own `input` (what its edges mapped), nothing else of itself."""
        own = re.compile(r"\bnodes\s*\.\s*" + re.escape(plan.id) + r"\b(?:\s*\.\s*([A-Za-z_]\w*))?")
        sources = [e.source for e in _node_expressions(plan)]
        for source in sources:
            for m in own.finditer(_strip_strings(source)):
                if m.group(1) != "input":
                    self.error(path, f"a node may read only its own input: nodes.{plan.id}.{m.group(1) or ''} is not allowed")
                    return

    def _vars_warnings(self, nodes: dict[str, NodePlan], anc: _Ancestry | None) -> None:
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
                        self.warnings.append(
                            Diagnostic(
                                f"{nodes[b].path}.export.{key}",
                                f"{a!r} and {b!r} both set vars.{key} with no order between them: the last to finish wins",
                            )
                        )


class _Ancestry:
    """Ancestor sets as bitmasks, built on first use (most workflows never need them)."""

    def __init__(self, nodes: dict[str, NodePlan], order: list[str]) -> None:
        self.nodes = nodes
        self._order = order
        self._masks: dict[str, int] | None = None
        self._bit: dict[str, int] = {nid: i for i, nid in enumerate(order)}

    def is_ancestor(self, a: str, b: str) -> bool:
        if self._masks is None:
            masks: dict[str, int] = {}
            for nid in self._order:
                m = 0
                for edge in self.nodes[nid].incoming:
                    m |= masks[edge.source] | (1 << self._bit[edge.source])
                masks[nid] = m
            self._masks = masks
        return bool(self._masks[b] >> self._bit[a] & 1)


def _cycles(nodes: dict[str, NodePlan], remaining: set[str]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative) of the nodes left by Kahn."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(remaining, key=lambda x: nodes[x].index):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            succ = [e.target for e in nodes[v].outgoing if e.target in remaining]
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp, key=lambda x: nodes[x].index))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _node_expressions(plan: NodePlan) -> list[Expression]:
    out: list[Expression] = []
    for expr in (plan.when, plan.items, plan.expr, *(c.when for c in plan.cases)):
        if expr is not None:
            out.append(expr)
    templates = [plan.output, plan.until, *(plan.export or {}).values()]
    for part in (plan.step, plan.body, plan.compensate):
        if part is not None:
            templates += [part.value, part.args, part.prompt, part.system, part.workflow_input]
    for t in templates:
        if t is not None:
            out.extend(t.expressions)
    return out


def _unwrap(text: str) -> str:
    m = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.DOTALL)
    return m.group(1).strip() if m else text


def _edge_path(spec: pb.WorkflowSpec, edge: EdgePlan) -> str:
    for j, e in enumerate(spec.edges):
        if e.from_node == edge.source and e.to == edge.target:
            return f"edges[{j}]"
    return f"edge {edge.source} -> {edge.target}"


def _close(name: str, nodes: dict[str, NodePlan]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(nodes), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _known(names: list[str]) -> str:
    return f"; known tools: {', '.join(sorted(names))}" if len(names) <= 20 else ""


def compile_workflow(spec: pb.WorkflowSpec, *, tools: ToolRegistry, agents: AgentProviders) -> Any:
    """Validates `spec` and compiles it; raises InvalidWorkflow with every problem found.

    A DAG gives a Plan; `mode: state_machine` gives the state machine compiler's plan.
    Values no field may hold (unknown enum numbers, NaN, mixed-sign durations, NUL characters)
    are refused first: the compilers below may then trust every enum and number."""
    problems = check_message(spec)
    if problems:
        raise InvalidWorkflow(problems)
    if spec.mode == pb.WorkflowSpec.MODE_STATE_MACHINE:
        try:
            from agentrun.engine.machine.compiler import compile_machine
        except ImportError:
            raise InvalidWorkflow(
                [Diagnostic("mode", "state machine workflows are not supported by this build")]
            ) from None
        return compile_machine(spec, tools=tools, agents=agents)
    return _Compiler(spec, tools, agents).compile()


__all__ = ["compile_workflow", "normalize_numbers", "struct_to_py", "value_to_py"]
