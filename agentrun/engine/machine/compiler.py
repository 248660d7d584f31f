"""Validation and compilation of `mode: state_machine` specs: WorkflowSpec -> MachinePlan.

Every problem is reported at once, each with the field path a user finds in their file
(`states.pending.on.PAY[0].guard`, `states.paid.after[0].target`, `initial`): unknown targets,
no or an unknown initial state, states no path from the initial one reaches, non-final states
with no way out, bad guards and assignments, unknown tools or providers, DAG-only fields.
Actions are steps, read by the `StepCompiler` the DAG compiler uses too.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from agentrun.engine.errors import Diagnostic, InvalidWorkflow, join_path
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
from agentrun.engine.plan import AgentStep, StepPlan, ToolStep, WorkflowStep
from agentrun.engine.ports import AgentProviders, ToolRegistry
from agentrun.engine.retry import RetrySpec
from agentrun.engine.step_compiler import (
    StepCompiler,
    at_most_once,
    did_you_mean,
    is_irreversible,
    struct_to_py,
    value_to_py,
)
from agentrun.v1 import workflow_pb2 as pb

__all__ = ["compile_machine", "format_delay"]

STATE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}\Z")
EVENT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,127}\Z")

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


def compile_machine(
    spec: pb.WorkflowSpec, *, tools: ToolRegistry, agents: AgentProviders
) -> MachinePlan:
    """Validates a state machine spec and compiles it; raises InvalidWorkflow with every problem."""
    return _MachineCompiler(spec, tools, agents).compile()


class _MachineCompiler:
    """One use per spec; problems collect in its `StepCompiler`."""

    def __init__(self, spec: pb.WorkflowSpec, tools: ToolRegistry, agents: AgentProviders) -> None:
        self.spec = spec
        self.c = StepCompiler(tools, agents)
        # Whether any expression reads `secrets` (only then are secrets put in scope).
        self._uses_secrets = False

    def compile(self) -> MachinePlan:
        spec, c = self.spec, self.c
        c.check_name(spec.name)
        present = {fd.name for fd, _ in spec.ListFields()}
        for name in _DAG_ONLY:
            if name in present:
                c.error(name, "is for DAG workflows; a state machine has `states`")
        input_schema = (
            c.schema(spec.input_schema, "input_schema") if "input_schema" in present else None
        )
        default_retry = (
            c.retry(spec.defaults.retry, "defaults.retry")
            if spec.defaults.HasField("retry")
            else RetrySpec()
        )
        default_timeout = c.duration(spec.defaults, "timeout", "defaults")
        data = struct_to_py(spec.data) if "data" in present else {}

        names = sorted(spec.states)
        if not names:
            c.error("states", "a state machine needs at least one state")
        for name in names:
            if not STATE_NAME_RE.match(name):
                c.error(
                    f"states.{name}",
                    "a state name is letters, digits, '_', '.' or '-', starting with a letter",
                )
        if not spec.initial:
            c.error("initial", "is required: the state an instance starts in")
        elif spec.initial not in spec.states:
            c.error("initial", f"unknown state {spec.initial!r}{did_you_mean(spec.initial, names)}")

        states = {
            name: self._state(name, spec.states[name], names, default_retry, default_timeout)
            for name in names
        }
        stages = self._reachability(spec.initial, states)
        if c.diags:
            raise InvalidWorkflow(c.diags)
        return MachinePlan(
            name=spec.name,
            spec=spec,
            initial=spec.initial,
            data=data,
            states=states,
            input_schema=input_schema,
            warnings=c.warnings,
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
        c = self.c
        path = f"states.{name}"
        on: dict[str, tuple[TransitionPlan, ...]] = {}
        for event in sorted(s.on):
            epath = join_path(f"{path}.on", event)
            if ":" in event:
                c.error(
                    epath, "':' is reserved for the engine's own events (after:, invoke:, action:)"
                )
            elif not EVENT_NAME_RE.match(event):
                c.error(
                    epath,
                    "an event name is letters, digits, '_', '.', '-' or '/', starting with a letter",
                )
            transitions = s.on[event].transitions
            if not transitions:
                c.error(epath, "needs at least one transition")
            on[event] = self._transitions(
                transitions, epath, name, names, default_retry, default_timeout
            )
        entry = self._actions(s.entry, f"{path}.entry", "entry", default_retry, default_timeout)
        exit_ = self._actions(s.exit, f"{path}.exit", "exit", default_retry, default_timeout)
        timers = []
        for i, t in enumerate(s.after):
            tpath = f"{path}.after[{i}]"
            delay = None
            if not t.HasField("delay"):
                c.error(f"{tpath}.delay", "is required")
            else:
                delay = c.duration(t, "delay", tpath)
            holder = pb.Transition(
                guard=t.guard,
                target=t.target,
                assign=t.assign,
                actions=t.actions,
                reenter=t.reenter,
            )
            if not t.HasField("assign"):
                holder.ClearField("assign")
            transition = self._transition(
                holder, i, tpath, name, names, default_retry, default_timeout
            )
            if delay is not None:
                timers.append(
                    TimerPlan(i, tpath, delay, AFTER_PREFIX + format_delay(delay), transition)
                )
        invoke = self._invoke(s.invoke, f"{path}.invoke") if s.HasField("invoke") else None
        on_done: tuple[TransitionPlan, ...] = ()
        if s.HasField("on_done"):
            if invoke is None:
                c.error(
                    f"{path}.on_done",
                    "is taken when the state's `invoke` finishes; this state invokes nothing",
                )
            on_done = (
                self._transition(
                    s.on_done, 0, f"{path}.on_done", name, names, default_retry, default_timeout
                ),
            )
        on_error: tuple[TransitionPlan, ...] = ()
        if s.HasField("on_error"):
            on_error = (
                self._transition(
                    s.on_error, 0, f"{path}.on_error", name, names, default_retry, default_timeout
                ),
            )
        if invoke is not None and not on_done and not s.is_final:
            c.warnings.append(
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
                    c.error(
                        f"{path}.{field_name}",
                        "a final state is never left: it takes no " + field_name,
                    )
        elif not (on or s.after or invoke is not None):
            c.error(
                path,
                "a state that is not final needs a way out: on, after or invoke (or final: true)",
            )
        return StatePlan(
            name=name,
            path=path,
            on=on,
            entry=entry,
            exit=exit_,
            after=tuple(timers),
            invoke=invoke,
            on_done=on_done,
            on_error=on_error,
            final=s.is_final,
            events=tuple(on),
        )

    def _transitions(
        self,
        items: Any,
        path: str,
        source: str,
        names: list[str],
        retry: RetrySpec,
        timeout: float | None,
    ) -> tuple[TransitionPlan, ...]:
        out = []
        for i, t in enumerate(items):
            tpath = f"{path}[{i}]"
            out.append(self._transition(t, i, tpath, source, names, retry, timeout))
            if i < len(items) - 1 and not t.guard:
                self.c.error(
                    f"{path}[{i + 1}]", f"never tried: {tpath} has no guard, so it always wins"
                )
        return tuple(out)

    def _transition(
        self,
        t: Any,
        index: int,
        path: str,
        source: str,
        names: list[str],
        retry: RetrySpec,
        timeout: float | None,
    ) -> TransitionPlan:
        """`source`: the state the transition leaves (or stays in)."""
        c = self.c
        if t.target and t.target not in names:
            c.error(f"{path}.target", f"unknown state {t.target!r}{did_you_mean(t.target, names)}")
        guard = None
        if t.guard:
            expr = c.boolean(t.guard, f"{path}.guard", MACHINE_NAMES)
            if expr is not None:
                guard = self._compiled(expr)
                if _constant_not_bool(expr.source):
                    c.error(f"{path}.guard", f"must yield a bool, not the constant {expr.source}")
        assign = []
        if t.HasField("assign"):
            for key, value in t.assign.fields.items():
                template = c.template(value_to_py(value), f"{path}.assign.{key}", MACHINE_NAMES)
                assign.append((key, self._compiled(template)))
        actions = self._actions(t.actions, f"{path}.actions", "transition", retry, timeout)
        if t.reenter and not t.target:
            c.error(f"{path}.reenter", "needs a target: reenter exits and enters that state again")
        return TransitionPlan(
            index=index,
            path=path,
            target=t.target,
            guard=guard,
            assign=tuple(assign),
            actions=actions,
            reenter=t.reenter,
            quick=not actions and self._calls_nothing(source, t),
        )

    def _calls_nothing(self, source: str, t: Any) -> bool:
        """Whether taking `t` from `source` runs no exit or entry action and starts no invoke.
        Read from the spec, whose actions are the plan's once it compiles."""
        states = self.spec.states
        target = t.target or source
        if target not in states or source not in states:
            return False  # reported: no plan is returned
        if target == source and not t.reenter:
            return True
        entered = states[target]
        return not states[source].exit and not entered.entry and not entered.HasField("invoke")

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
            step = self.c.standalone_step(step_msg, spath, MACHINE_NAMES)
            if step is None:
                continue
            if "secrets" in step.names:
                self._uses_secrets = True
            retry = step.retry or default_retry
            if is_irreversible(step):
                retry = at_most_once(retry)
            timeout = (
                step.timeout
                if step.timeout is not None
                else (None if isinstance(step, WorkflowStep) else default_timeout)
            )
            out.append(ActionPlan(step, spath, phase, i, retry, timeout, _target(step)))
        return tuple(out)

    def _invoke(self, call: pb.WorkflowCall, path: str) -> InvokePlan:
        c = self.c
        if not call.name:
            c.error(f"{path}.workflow", "is required: the workflow to run while in this state")
        elif call.name == self.spec.name:
            c.error(f"{path}.workflow", "a state machine cannot invoke itself")
        if call.version < 0:
            c.error(f"{path}.version", "must not be negative")
        template = None
        if call.HasField("input"):
            template = self._compiled(
                c.template(value_to_py(call.input), f"{path}.input", MACHINE_NAMES)
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
            self.c.error(
                f"states.{name}",
                f"unreachable: no transition from the initial state {initial!r} leads here",
            )
        stages: list[list[str]] = []
        for name, lv in sorted(level.items(), key=lambda kv: (kv[1], kv[0])):
            while len(stages) <= lv:
                stages.append([])
            stages[lv].append(name)
        return stages


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
    match step:
        case ToolStep():
            return step.tool.name if step.tool is not None else ""
        case AgentStep():
            return f"{step.provider.name}/{step.model}" if step.provider is not None else step.model
        case WorkflowStep():
            return step.workflow
    return "pass"


_NOT_BOOL = re.compile(r"""\s*(-?\d[\d.eE+-]*|"[^"]*"|'[^']*'|null|\[.*\]|\{.*\})\s*""", re.DOTALL)


def _constant_not_bool(source: str) -> bool:
    """A guard that is a literal number, string, null, list or map can never be a bool."""
    return bool(_NOT_BOOL.fullmatch(source))
