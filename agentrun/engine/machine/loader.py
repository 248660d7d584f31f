"""The state machine shorthands of workflow files (FORMAT.md, State machines), installed into
the loader's walk (agentrun/engine/spec_walk.py) for `agentrun.v1.MachineState`:
`on: {E: target}`, `after: {30m: target}`, `invoke: {workflow: name}` and a bare target for
`on_done` / `on_error`. Each returns the constructor arguments of the full form, which is
accepted too (stored specs are written in it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentrun import spec_words
from agentrun.engine.errors import Diagnostic, join_path
from agentrun.engine.spec_walk import (
    NO_SHORTHAND,
    FieldInfo,
    describe,
    map_key,
    message_info,
    report_notes,
    walk_duration,
    walk_message,
)
from agentrun.v1.workflow_pb2 import Transitions

__all__ = ["machine_state_shorthands"]


def machine_state_shorthands(
    spec: FieldInfo, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> Any:
    """The mapping forms of `after` and `on`, and a bare target name for `on_done` and
    `on_error` (as `on: {E: target}` allows); NO_SHORTHAND leaves the field to the generic walk."""
    if spec.name in ("on_done", "on_error") and isinstance(value, str):
        return spec.walk({"target": value}, path, errors, depth)
    if not isinstance(value, Mapping):
        return NO_SHORTHAND
    if spec.name == "after":
        return _after_shorthand(spec, value, path, errors, depth)
    if spec.name == "on":
        return _on_shorthand(value, path, errors, depth)
    if spec.name == "invoke" and "workflow" in value:
        return _invoke_shorthand(spec, value, path, errors, depth)
    return NO_SHORTHAND


def _after_shorthand(
    spec: FieldInfo, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> list[dict[str, Any]]:
    """`after: {30m: {target: x}}` (or `{30m: x}`) is `after: [{delay: 1800s, target: x}]`."""
    assert spec.message is not None
    report_notes(value, path, errors)
    timers = []
    for key, item in value.items():
        delay = map_key(key)
        if delay is None:
            errors.append(
                Diagnostic(path, f"`after` keys are durations such as 30m, got {describe(key)}")
            )
            continue
        sub = join_path(path, delay)
        body = {"target": item} if isinstance(item, str) else item
        if isinstance(body, Mapping) and "delay" in body:
            message = "the key gives the delay already; remove `delay`"
            errors.append(Diagnostic(join_path(sub, "delay"), message))
            continue
        timer = walk_message(spec.message, body, sub, errors, depth + 1)
        timer["delay"] = walk_duration(delay, sub, errors, depth + 1)
        timers.append(timer)
    return timers


def _on_shorthand(
    value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    report_notes(value, path, errors)
    out = {}
    for key, item in value.items():
        event = map_key(key)
        if event is None:
            errors.append(Diagnostic(path, f"event names are strings, got {describe(key)}"))
            continue
        sub = join_path(path, event)
        if item is None:
            errors.append(Diagnostic(sub, "expected a transition, got null"))
            continue
        out[event] = _walk_transitions(item, sub, errors, depth + 1)
    return out


def _walk_transitions(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    """`on: {E: target}`, `on: {E: {target: x}}` and `on: {E: [{guard, target}, ...]}` are all
    `on: {E: {transitions: [...]}}`, the full form, which is accepted too."""
    info = _TRANSITIONS
    transitions = info.fields["transitions"]
    if isinstance(value, str):
        value = [{"target": value}]
    if isinstance(value, Mapping) and value and "transitions" not in value:  # `{}` is the full form
        assert transitions.message is not None
        transition = walk_message(transitions.message, value, path, errors, depth)
        return {"transitions": [transition]}
    if isinstance(value, (list, tuple)):
        return {"transitions": transitions.walk(value, path, errors, depth)}
    return walk_message(info, value, path, errors, depth)


def _invoke_shorthand(
    spec: FieldInfo, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    """FORMAT.md's state machine writes `invoke: {workflow: fulfil}`: "invoke workflow fulfil"
    reads better than `name:` there, so `workflow` is accepted as the child workflow's name."""
    assert spec.message is not None
    if "name" in value:
        message = "give the workflow as `name` or `workflow`, not both"
        errors.append(Diagnostic(join_path(path, "workflow"), message))
        return {}
    body = {("name" if key == "workflow" else key): item for key, item in value.items()}
    return walk_message(spec.message, body, path, errors, depth)


# Built at import, under the import lock, like the loader's own table.
_TRANSITIONS = message_info(spec_words.descriptor(Transitions))
