"""What both compilers read the same way: steps, retry policies, durations, schemas, templates.

A DAG node's call, a map body, a compensation, a fallback and a state machine action are all
one `Step` message (tool, agent, pass or workflow). `StepCompiler` turns them into `StepPlan`s
and collects every problem with its field path, so that the DAG compiler
(agentrun/engine/compiler.py) and the state machine compiler
(agentrun/engine/machine/compiler.py) report a step's problems in the same words. Each of them
holds one `StepCompiler` and adds its own diagnostics to it.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import jsonschema

from agentrun import spec_words
from agentrun.engine.errors import Diagnostic
from agentrun.engine.expr_checks import secret_diagnostics, sql_query_warnings
from agentrun.engine.expressions import (
    Expression,
    ExpressionError,
    Template,
    compile_bool,
    compile_template_collect,
    normalize_numbers,
    scalar_template,
)
from agentrun.engine.labels import label_problems
from agentrun.engine.plan import (
    AgentStep,
    PassStep,
    StepPlan,
    ToolStep,
    WaitStep,
    WorkflowStep,
    new_plan,
)
from agentrun.engine.ports import AgentProviders, Effect, ToolRegistry
from agentrun.engine.retry import Backoff, Jitter, RetrySpec
from agentrun.v1 import workflow_pb2 as pb

__all__ = [
    "NAME_RE",
    "StepCompiler",
    "at_most_once",
    "did_you_mean",
    "is_irreversible",
    "seconds",
    "struct_to_py",
    "value_to_py",
]

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")

_STEPS: dict[str, type[StepPlan]] = {
    "tool": ToolStep,
    "agent": AgentStep,
    "pass": PassStep,
    "workflow": WorkflowStep,
    "wait": WaitStep,
}
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


def seconds(duration: Any) -> float:
    """A `google.protobuf.Duration` in seconds."""
    return float(duration.seconds + duration.nanos / 1e9)


def did_you_mean(name: str, names: Any) -> str:
    """` (did you mean 'x'?)` for the closest of `names`, or nothing."""
    match = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _known(names: list[str]) -> str:
    return f"; known tools: {', '.join(sorted(names))}" if len(names) <= 20 else ""


class StepCompiler:
    """Compiles the parts both kinds of workflow share; collects `diags` (errors, which fail the
    compile) and `warnings` (kept on the plan) instead of stopping at the first problem."""

    def __init__(self, tools: ToolRegistry, agents: AgentProviders) -> None:
        self.tools = tools
        self.agents = agents
        self.diags: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: str, message: str) -> None:
        self.diags.append(Diagnostic(path, message))

    def check_name(self, name: str) -> None:
        """A workflow's `name`: required, and a DNS label (it appears in resource names)."""
        if not name:
            self.error("name", "is required")
        elif not NAME_RE.match(name):
            self.error("name", "must be lower-case letters, digits and '-' (at most 63)")

    # -- expressions ------------------------------------------------------
    def template(
        self, value: Any, path: str, allowed: frozenset[str], *, secrets_ok: bool = False
    ) -> Template:
        """`secrets_ok`: a field whose value is sent, never stored (tool args, agent prompt)."""
        scalar = scalar_template(value)
        if scalar is not None:
            return scalar
        errors: list[ExpressionError] = []
        t = compile_template_collect(value, path, allowed, errors)
        for e in errors:
            self.error(e.path, e.message)
        if t.expressions:
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

    # -- values ---------------------------------------------------------------
    def duration(self, msg: Any, name: str, path: str, *, allow_zero: bool = False) -> float | None:
        if not msg.HasField(name):
            return None
        value = seconds(getattr(msg, name))
        if value < 0 or (value == 0 and not allow_zero):
            self.error(f"{path}.{name}" if path else name, "must be a positive duration")
            return None
        return value

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
            if policy.HasField(name) and seconds(getattr(policy, name)) < 0:
                self.error(f"{path}.{name}", "must not be negative")
        return RetrySpec(
            max_attempts=policy.max_attempts or base.max_attempts,
            backoff=_BACKOFF[policy.backoff] if policy.backoff else base.backoff,
            initial_interval=seconds(policy.initial_interval)
            if policy.HasField("initial_interval")
            else base.initial_interval,
            max_interval=seconds(policy.max_interval)
            if policy.HasField("max_interval")
            else base.max_interval,
            multiplier=policy.multiplier or base.multiplier,
            jitter=_JITTER[policy.jitter] if policy.jitter else base.jitter,
            non_retryable=frozenset(policy.non_retryable) or base.non_retryable,
        )

    # -- steps (tool, agent, pass, workflow) ----------------------------------
    def step(
        self,
        msg: Any,
        kind: str,
        path: str,
        allowed: frozenset[str],
        *,
        retry: RetrySpec | None = None,
        timeout: float | None = None,
        body: Any = None,
        doc: dict[str, Any] | None = None,
    ) -> StepPlan:
        """`kind` is the file word of the set member of `msg.kind` (`pass`, not `pass_node`);
        `body`, that member when the caller has it already; `doc`, its stored form
        (`spec_to_dict`), from which a pass or a tool call is read instead (`msg` unused)."""
        if kind == "pass":  # most calls of a large spec: built without a dict of fields
            p = f"{path}.pass"
            step = new_plan(PassStep)
            PassStep.__init__(
                step,
                path=p,
                value=self._pass_value(msg, body, doc, p, allowed),
                retry=retry,
                timeout=timeout,
            )
            return step
        cls, fields = self._step_fields(msg, kind, path, allowed, body, doc)
        fields["retry"] = retry
        fields["timeout"] = timeout
        return cls(**fields)

    def _pass_value(
        self, msg: Any, body: Any, doc: dict[str, Any] | None, p: str, allowed: frozenset[str]
    ) -> Template:
        if doc is not None:
            value = normalize_numbers(doc["value"]) if "value" in doc else None
        else:
            if body is None:
                body = spec_words.member(msg)
            value = value_to_py(body.value) if body.HasField("value") else None
        return scalar_template(value) or self.template(value, f"{p}.value", allowed)

    def _step_fields(
        self,
        msg: Any,
        kind: str,
        path: str,
        allowed: frozenset[str],
        body: Any = None,
        doc: dict[str, Any] | None = None,
    ) -> tuple[type[StepPlan], dict[str, Any]]:
        """The class of the step's kind and its fields (retry and timeout are the caller's)."""
        if doc is None and body is None:
            body = spec_words.member(msg)
        p = f"{path}.{kind}"
        out: dict[str, Any] = {"path": p}
        if kind == "pass":
            out["value"] = self._pass_value(msg, body, doc, p, allowed)
        elif kind == "tool":
            if doc is not None:
                name = doc.get("name", "")
                args = normalize_numbers(doc["args"]) if "args" in doc else {}
                labels = dict(doc.get("labels", ()))
            else:
                name = body.name
                args = value_to_py(body.args) if body.HasField("args") else {}
                labels = dict(body.labels)
            tool = None
            if not name:
                self.error(f"{p}.name", "is required")
            else:
                tool = self.tools.get(name)
                if tool is None:
                    self.error(f"{p}.name", f"unknown tool {name!r}{_known(self.tools.names())}")
            template = self.template(args, f"{p}.args", allowed, secrets_ok=True)
            self.warnings.extend(sql_query_warnings(name, args, f"{p}.args"))
            if tool is not None and tool.args_schema and template.is_constant:
                try:
                    jsonschema.validate(template.constant, tool.args_schema)
                except jsonschema.ValidationError as exc:
                    where = "".join(f".{x}" if isinstance(x, str) else f"[{x}]" for x in exc.path)
                    self.error(f"{p}.args{where}", exc.message)
            for problem in label_problems(labels, f"{p}.labels"):
                self.error(problem.path, problem.message)
            out.update(tool=tool, args=template, labels=labels)
        elif kind == "agent":
            provider_name, _, model = body.model.partition("/")
            provider = None
            if not body.model or not model:
                self.error(f"{p}.model", "must be provider/model, such as mock/echo")
            else:
                provider = self.agents.get(provider_name)
                if provider is None:
                    self.error(f"{p}.model", f"unknown agent provider {provider_name!r}")
                elif not provider.knows_model(model):
                    self.error(f"{p}.model", f"provider {provider_name!r} has no model {model!r}")
            out.update(provider=provider, model=model)
            out["prompt"] = self.template(body.prompt, f"{p}.prompt", allowed, secrets_ok=True)
            out["system"] = self.template(body.system, f"{p}.system", allowed, secrets_ok=True)
            if body.HasField("output_schema"):
                out["output_schema"] = self.schema(body.output_schema, f"{p}.output_schema")
            out["agent_tools"] = tuple(body.tools)
            for i, name in enumerate(body.tools):
                if self.tools.get(name) is None:
                    self.error(f"{p}.tools[{i}]", f"unknown tool {name!r}")
            if body.max_turns < 0:
                self.error(f"{p}.max_turns", "must not be negative")
            out.update(
                max_turns=body.max_turns,
                temperature=body.temperature if body.HasField("temperature") else None,
                max_tokens=body.max_tokens,
                stream=body.stream if body.HasField("stream") else None,
            )
        elif kind == "wait":
            if not body.signal or body.HasField("duration") or body.until:
                self.error(p, "a map item waits for a signal: set `signal` (no duration or until)")
            out.update(signal=body.signal, wait_schema=self.wait_schema(body, p))
        elif kind == "workflow":
            if not body.name:
                self.error(f"{p}.name", "is required")
            out.update(workflow=body.name, workflow_version=body.version)
            out["workflow_input"] = self.template(
                value_to_py(body.input) if body.HasField("input") else {}, f"{p}.input", allowed
            )
        return _STEPS[kind], out

    def standalone_step(
        self, msg: Any, path: str, allowed: frozenset[str], *, waits: bool = False
    ) -> StepPlan | None:
        """A `Step` message with its own retry policy and timeout (a compensation, a fallback,
        a map body, an action); None, reported, when it names no kind. Only a map's body
        (`waits`) may be a wait for a signal, whose timeout is the wait's."""
        kind = spec_words.which(msg)
        if kind is None:
            self.error(
                path,
                "needs exactly one kind: agent, tool, pass, workflow"
                + (" or wait" if waits else ""),
            )
            return None
        if kind == "wait" and not waits:
            self.error(
                f"{path}.wait",
                "a wait step is only allowed as a map's body (each item waits for its own answer)",
            )
            return None
        cls, fields = self._step_fields(msg, kind, path, allowed)
        retry = self.retry(msg.retry, f"{path}.retry") if msg.HasField("retry") else None
        timeout = self.duration(msg, "timeout", path)
        if kind == "wait":
            if msg.HasField("timeout"):
                self.error(f"{path}.timeout", "a wait step takes no timeout (use wait.timeout)")
            timeout = self.duration(msg.wait, "timeout", f"{path}.wait")
        return cls(**fields, retry=retry, timeout=timeout)

    def wait_schema(self, wait: Any, path: str) -> dict[str, Any] | None:
        """A wait's answer schema (`wait.schema`), only for a wait for a signal."""
        if not wait.HasField("schema"):
            return None
        if not wait.signal:
            self.error(f"{path}.schema", "only a wait for a signal takes a schema (of its answer)")
        return self.schema(wait.schema, f"{path}.schema")


def is_irreversible(step: StepPlan | None) -> bool:
    """A call to a tool marked irreversible: it is never retried automatically."""
    return (
        isinstance(step, ToolStep)
        and step.tool is not None
        and step.tool.effect is Effect.IRREVERSIBLE
    )


def at_most_once(retry: RetrySpec) -> RetrySpec:
    """`retry` limited to one attempt (what an irreversible tool gets, whatever its policy)."""
    return RetrySpec(max_attempts=1, backoff=retry.backoff, non_retryable=retry.non_retryable)
