"""Validation and compilation of `mode: state_machine` specs: WorkflowSpec -> MachinePlan.

Every problem is reported at once, each with the field path a user finds in their file
(`states.pending.on.PAY[0].guard`, `states.paid.after[0].target`, `initial`): unknown targets,
no or an unknown initial state, states no path from the initial one reaches, non-final states
with no way out, bad guards and assignments, unknown tools or providers, DAG-only fields.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from agentrun.engine.compiler import NAME_RE, _Compiler, struct_to_py, value_to_py
from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.engine.loader import _join
from agentrun.engine.machine.plan import (
    AFTER_PREFIX,
    MACHINE_NAMES,
    ActionPlan,
    Compiled,
    InvokePlan,
    MachinePlan,
    StatePlan,
    TimerPlan,
    TransitionPlan,
)
from agentrun.engine.plan import StepPlan
from agentrun.engine.ports import AgentProviders, Effect, ToolRegistry
from agentrun.engine.retry import RetrySpec
from agentrun.v1 import workflow_pb2 as pb

__all__ = ["compile_machine", "format_delay"]

STATE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
EVENT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,127}$")

# WorkflowSpec fields that belong to DAGs only.
_DAG_ONLY = ("nodes", "edges", "output", "error_handlers", "compensation", "concurrency", "timeout")


def format_delay(seconds: float) -> str:
    """1800.0 -> "30m", 90.0 -> "90s", 0.5 -> "500ms": the `after` key a user would write."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    ms = seconds * 1000
    if float(ms).is_integer():
        return f"{int(ms)}ms"
    return f"{seconds}s"


class _MachineCompiler(_Compiler):
    """Reuses the DAG compiler's helpers (steps, retry policies, durations, schemas)."""

    def compile_machine(self) -> MachinePlan:
        spec = self.spec
        if not spec.name:
            self.error("name", "is required")
        elif not NAME_RE.match(spec.name):
            self.error("name", "must be lower-case letters, digits and '-' (at most 63)")
        present = {fd.name for fd, _ in spec.ListFields()}
        for name in _DAG_ONLY:
            if name in present:
                self.error(name, "is for DAG workflows; a state machine has `states`")
        input_schema = (
            self.schema(spec.input_schema, "input_schema") if "input_schema" in present else None
        )
        default_retry = (
            self.retry(spec.defaults.retry, "defaults.retry")
            if spec.defaults.HasField("retry")
            else RetrySpec()
        )
        default_timeout = self.duration(spec.defaults, "timeout", "defaults")
        data = struct_to_py(spec.data) if "data" in present else {}

        names = sorted(spec.states)
        if not names:
            self.error("states", "a state machine needs at least one state")
        for name in names:
            if not STATE_NAME_RE.match(name):
                self.error(
                    f"states.{name}",
                    "a state name is letters, digits, '_', '.' or '-', starting with a letter",
                )
        if not spec.initial:
            self.error("initial", "is required: the state an instance starts in")
        elif spec.initial not in spec.states:
            self.error("initial", f"unknown state {spec.initial!r}{_close(spec.initial, names)}")

        self._uses_secrets = False
        states = {
            name: self._state(name, spec.states[name], names, default_retry, default_timeout)
            for name in names
        }
        stages = self._reachability(spec.initial, states)
        if not self.diags:
            _mark_quick(states)
        if self.diags:
            raise InvalidWorkflow(self.diags)
        return MachinePlan(
            name=spec.name,
            spec=spec,
            initial=spec.initial,
            data=data,
            states=states,
            input_schema=input_schema,
            warnings=self.warnings,
            stages=stages,
            uses_secrets=self._uses_secrets,
        )

    # -- states ---------------------------------------------------------------------
    def _state(
        self,
        name: str,
        s: pb.MachineState,
        names: list[str],
        default_retry: RetrySpec,
        default_timeout: float | None,
    ) -> StatePlan:
        path = f"states.{name}"
        plan = StatePlan(name=name, path=path, final=s.is_final)
        on: dict[str, tuple[TransitionPlan, ...]] = {}
        for event in sorted(s.on):
            epath = _join(f"{path}.on", event)
            if ":" in event:
                self.error(
                    epath, "':' is reserved for the engine's own events (after:, invoke:, action:)"
                )
            elif not EVENT_NAME_RE.match(event):
                self.error(
                    epath,
                    "an event name is letters, digits, '_', '.', '-' or '/', starting with a letter",
                )
            transitions = s.on[event].transitions
            if not transitions:
                self.error(epath, "needs at least one transition")
            on[event] = self._transitions(
                transitions, epath, names, default_retry, default_timeout, indexed=True
            )
        plan.on = on
        plan.events = tuple(on)
        plan.entry = self._actions(
            s.entry, f"{path}.entry", "entry", default_retry, default_timeout
        )
        plan.exit = self._actions(s.exit, f"{path}.exit", "exit", default_retry, default_timeout)
        timers = []
        for i, t in enumerate(s.after):
            tpath = f"{path}.after[{i}]"
            delay = None
            if not t.HasField("delay"):
                self.error(f"{tpath}.delay", "is required")
            else:
                delay = self.duration(t, "delay", tpath)
            holder = pb.Transition(
                guard=t.guard,
                target=t.target,
                assign=t.assign,
                actions=t.actions,
                reenter=t.reenter,
            )
            if not t.HasField("assign"):
                holder.ClearField("assign")
            transition = self._transition(holder, i, tpath, names, default_retry, default_timeout)
            if delay is not None:
                timers.append(
                    TimerPlan(i, tpath, delay, AFTER_PREFIX + format_delay(delay), transition)
                )
        plan.after = tuple(timers)
        if s.HasField("invoke"):
            plan.invoke = self._invoke(s.invoke, f"{path}.invoke")
        if s.HasField("on_done"):
            if plan.invoke is None:
                self.error(
                    f"{path}.on_done",
                    "is taken when the state's `invoke` finishes; this state invokes nothing",
                )
            plan.on_done = (
                self._transition(
                    s.on_done, 0, f"{path}.on_done", names, default_retry, default_timeout
                ),
            )
        if s.HasField("on_error"):
            plan.on_error = (
                self._transition(
                    s.on_error, 0, f"{path}.on_error", names, default_retry, default_timeout
                ),
            )
        if plan.invoke is not None and not plan.on_done and not plan.final:
            self.warnings.append(
                Diagnostic(f"{path}.invoke", "no on_done: the state ignores the workflow's result")
            )
        if s.is_final:
            for field_name, has in (
                ("on", bool(s.on)),
                ("after", bool(s.after)),
                ("invoke", s.HasField("invoke")),
                ("on_done", s.HasField("on_done")),
                ("on_error", s.HasField("on_error")),
                ("exit", bool(s.exit)),
            ):
                if has:
                    self.error(
                        f"{path}.{field_name}",
                        "a final state is never left: it takes no " + field_name,
                    )
        elif not (on or s.after or plan.invoke is not None):
            self.error(
                path,
                "a state that is not final needs a way out: on, after or invoke (or final: true)",
            )
        return plan

    def _transitions(
        self,
        items: Any,
        path: str,
        names: list[str],
        retry: RetrySpec,
        timeout: float | None,
        *,
        indexed: bool,
    ) -> tuple[TransitionPlan, ...]:
        out = []
        for i, t in enumerate(items):
            tpath = f"{path}[{i}]"
            out.append(self._transition(t, i, tpath, names, retry, timeout))
            if i < len(items) - 1 and not t.guard:
                self.error(
                    f"{path}[{i + 1}]", f"never tried: {tpath} has no guard, so it always wins"
                )
        return tuple(out)

    def _transition(
        self,
        t: Any,
        index: int,
        path: str,
        names: list[str],
        retry: RetrySpec,
        timeout: float | None,
    ) -> TransitionPlan:
        plan = TransitionPlan(index=index, path=path, target=t.target, reenter=t.reenter)
        if t.target and t.target not in names:
            self.error(f"{path}.target", f"unknown state {t.target!r}{_close(t.target, names)}")
        if t.guard:
            expr = self.boolean(t.guard, f"{path}.guard", MACHINE_NAMES)
            if expr is not None:
                plan.guard = self._compiled(expr)
                if _constant_not_bool(expr.source):
                    self.error(
                        f"{path}.guard", f"must yield a bool, not the constant {expr.source}"
                    )
        if t.HasField("assign"):
            assign = []
            for key, value in t.assign.fields.items():
                template = self.template(value_to_py(value), f"{path}.assign.{key}", MACHINE_NAMES)
                assign.append((key, self._compiled(template)))
            plan.assign = tuple(assign)
        plan.actions = self._actions(t.actions, f"{path}.actions", "transition", retry, timeout)
        if t.reenter and not t.target:
            self.error(
                f"{path}.reenter", "needs a target: reenter exits and enters that state again"
            )
        return plan

    def _compiled(self, slow: Any) -> Compiled:
        if "secrets" in slow.names:
            self._uses_secrets = True
        return Compiled(slow, names=frozenset(slow.names))

    def _actions(
        self,
        steps: Any,
        path: str,
        phase: str,
        default_retry: RetrySpec,
        default_timeout: float | None,
    ) -> tuple[ActionPlan, ...]:
        out = []
        for i, step_msg in enumerate(steps):
            spath = f"{path}[{i}]"
            step = self.standalone_step(step_msg, spath, MACHINE_NAMES)
            if step is None:
                continue
            if "secrets" in step.names:
                self._uses_secrets = True
            retry = step.retry or default_retry
            if (
                step.kind == "tool"
                and step.tool is not None
                and step.tool.effect is Effect.IRREVERSIBLE
            ):
                retry = RetrySpec(
                    max_attempts=1, backoff=retry.backoff, non_retryable=retry.non_retryable
                )
            timeout = (
                step.timeout
                if step.timeout is not None
                else (default_timeout if step.kind != "workflow" else None)
            )
            out.append(ActionPlan(step, spath, phase, i, retry, timeout, _target(step)))
        return tuple(out)

    def _invoke(self, call: pb.WorkflowCall, path: str) -> InvokePlan:
        if not call.name:
            self.error(f"{path}.workflow", "is required: the workflow to run while in this state")
        elif call.name == self.spec.name:
            self.error(f"{path}.workflow", "a state machine cannot invoke itself")
        if call.version < 0:
            self.error(f"{path}.version", "must not be negative")
        template = None
        if call.HasField("input"):
            template = self._compiled(
                self.template(value_to_py(call.input), f"{path}.input", MACHINE_NAMES)
            )
        return InvokePlan(path=path, workflow=call.name, version=call.version, input=template)

    # -- the graph --------------------------------------------------------------------
    def _reachability(self, initial: str, states: dict[str, StatePlan]) -> list[list[str]]:
        if initial not in states:
            return []
        level = {initial: 0}
        queue = deque([initial])
        while queue:
            name = queue.popleft()
            for target in sorted(_targets(states[name])):
                if target in states and target not in level:
                    level[target] = level[name] + 1
                    queue.append(target)
        for name in sorted(set(states) - set(level)):
            self.error(
                f"states.{name}",
                f"unreachable: no transition from the initial state {initial!r} leads here",
            )
        stages: list[list[str]] = []
        for name, lv in sorted(level.items(), key=lambda kv: (kv[1], kv[0])):
            while len(stages) <= lv:
                stages.append([])
            stages[lv].append(name)
        return stages


def _mark_quick(states: dict[str, StatePlan]) -> None:
    for source in states.values():
        groups = [
            *source.on.values(),
            source.on_done,
            source.on_error,
            tuple(t.transition for t in source.after),
        ]
        for group in groups:
            for t in group:
                target = states[t.target or source.name]
                leaving = target is not source or t.reenter
                t.quick = not t.actions and (
                    not leaving or (not source.exit and not target.entry and target.invoke is None)
                )


def _targets(state: StatePlan) -> set[str]:
    out: set[str] = set()
    groups = [
        *state.on.values(),
        state.on_done,
        state.on_error,
        tuple(t.transition for t in state.after),
    ]
    for group in groups:
        for t in group:
            if t.target:
                out.add(t.target)
    return out


def _target(step: StepPlan) -> str:
    if step.kind == "tool":
        return step.tool.name if step.tool is not None else ""
    if step.kind == "agent":
        return f"{step.provider.name}/{step.model}" if step.provider is not None else step.model
    if step.kind == "workflow":
        return step.workflow
    return "pass"


_NOT_BOOL = re.compile(r"""\s*(-?\d[\d.eE+-]*|"[^"]*"|'[^']*'|null|\[.*\]|\{.*\})\s*""", re.DOTALL)


def _constant_not_bool(source: str) -> bool:
    """A guard that is a literal number, string, null, list or map can never be a bool."""
    return bool(_NOT_BOOL.fullmatch(source))


def _close(name: str, names: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def compile_machine(
    spec: pb.WorkflowSpec, *, tools: ToolRegistry, agents: AgentProviders
) -> MachinePlan:
    """Validates a state machine spec and compiles it; raises InvalidWorkflow with every problem."""
    return _MachineCompiler(spec, tools, agents).compile_machine()
