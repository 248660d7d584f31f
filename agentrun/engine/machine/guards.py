"""A guard that cannot be evaluated refuses the event that asked for it.

A client sends an event with data the guard does not expect (`agentrun sm send ID PAY`
without `--data` on `guard: ${{ event.data.amount >= input.total }}`). That is the caller's
mistake, not the instance's: the event is refused with FAILED_PRECONDITION naming the guard,
its expression and the field it could not read, and the instance stays as it was (state, data,
history), ready for the next, well-formed event. Timers and invoke completions have no sender
to tell, so their guard errors still take the state's `on_error` path (runtime.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentrun.engine.expressions import ExpressionError
from agentrun.engine.machine.errors import GuardFailed
from agentrun.engine.machine.plan import TransitionPlan

_STRING = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", re.DOTALL)
# event.data.amount, data.paid, input.total: a name in scope, then field selections; a
# selection followed by `(` is a method call (`.size()`), not a field.
_SELECTION = re.compile(
    r"(?<![\w.])(event|data|input|state)((?:\s*\.\s*[A-Za-z_]\w*(?!\w|\s*\())*)"
)


def refusal(
    exc: ExpressionError,
    transitions: tuple[TransitionPlan, ...],
    act: Mapping[str, Any],
    *,
    instance: str,
    event: str,
    current: str,
) -> GuardFailed:
    """The error that refuses `event`, from the guard evaluation that raised `exc`."""
    guard = next((t.guard for t in transitions if t.guard and t.guard.path == exc.path), None)
    source = guard.source if guard is not None else ""
    missing = missing_field(source, act)
    field, cause = missing if missing is not None else (None, exc.message)
    message = (
        f"event {event!r} refused: guard {exc.path} `{source}` cannot be evaluated: {cause}; "
        f"the instance is unchanged (state {current!r})"
    )
    return GuardFailed(
        message,
        instance=instance,
        event=event,
        current=current,
        guard=exc.path,
        expression=source,
        field=field,
    )


def missing_field(source: str, act: Mapping[str, Any]) -> tuple[str, str] | None:
    """(path, why) of the first field the expression selects that the values lack, such as
    ("event.data.amount", "event.data is null, so event.data.amount does not exist"); None
    when every selected field is there (the error has another cause)."""
    code = _STRING.sub('""', source)
    for match in _SELECTION.finditer(code):
        root = match.group(1)
        fields = [f.strip() for f in match.group(2).split(".")[1:]]
        value: Any = act.get(root)
        path = root
        for name in fields:
            selected = f"{path}.{name}"
            if isinstance(value, Mapping):
                if name not in value:
                    return selected, f"{path} has no field {name!r}"
                value, path = value[name], selected
                continue
            what = "null" if value is None else f"{_json_type(value)}, not an object"
            return selected, f"{path} is {what}, so {selected} does not exist"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"
