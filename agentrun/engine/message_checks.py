"""Checks on protobuf messages that the type system cannot make, found by walking descriptors.

A proto3 enum field accepts any number, a double accepts NaN and the infinities, a Duration
accepts `seconds: 1, nanos: -500`, and a string accepts NUL characters and any length. None of
these means anything in a workflow or a request, and each breaks something later (a KeyError in
the compiler, a JSON encoder refusing NaN, PostgreSQL refusing NUL in text, an error message too
big to deliver): so they are refused up front, every one with its field path, the same for
every backend. (Nesting is bounded by protobuf's parser: 100 levels of messages.)

The walk is iterative and stops after `MAX_PROBLEMS`, so no message can make it slow.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, cast

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from agentrun import spec_words
from agentrun.engine.errors import Diagnostic
from agentrun.spec_words import word

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_STRING_LENGTH",
    "check_message",
    "checked_dict",
]

# google.protobuf.Duration and Timestamp ranges (their .proto files).
MAX_DURATION_SECONDS = 315_576_000_000
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
# Names and ids (`name`, `workflow`, `parent`, `*_id`, ...) and any other string field.
MAX_ID_LENGTH = 256
MAX_STRING_LENGTH = 1_000_000  # prompts may be long; this only bounds what an error may echo
# Free text whose size only the message size limit bounds (workflow source, expressions).
UNBOUNDED_STRINGS = frozenset({"source"})
_ID_FIELDS = frozenset({"name", "workflow", "parent", "page_token", "signal", "event"})
MAX_PROBLEMS = 1000

_VALUE = "google.protobuf.Value"
_STRUCT = "google.protobuf.Struct"
_LIST = "google.protobuf.ListValue"
_DURATION = "google.protobuf.Duration"
_TIMESTAMP = "google.protobuf.Timestamp"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_message(
    message: Message, path: str = "", *, skip: frozenset[str] = frozenset()
) -> list[Diagnostic]:
    """Every problem in `message` (at most MAX_PROBLEMS), located from `path`.

    Submessages whose full type name is in `skip` are not walked (their owner checks them).
    """
    if _clean(message, skip):
        return []  # the common case, found without building a single path
    problems: list[Diagnostic] = []
    stack: list[tuple[Any, str]] = [(message, path)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, where = stack.pop()
        if isinstance(item, Message):
            _message(item, where, problems, stack, skip)
        else:  # a JSON value from a Struct / Value / ListValue, already converted
            _json(item, where, problems, stack)
    return problems[:MAX_PROBLEMS]


def checked_dict(message: Message) -> dict[str, Any] | None:
    """`spec_words.to_dict(message)` when `check_message(message)` finds nothing, else None
    (possibly for a message it accepts: a float32 field, say); built in one walk, the stored
    form's: registration needs both, and walked a 10,000-node spec twice."""
    return spec_words.checked_dict(message, _CHECKS)


def _string_limit(field: FieldDescriptor) -> int | None:
    """The length limit of a string field; None: any length."""
    name = field.name
    if name in UNBOUNDED_STRINGS:
        return None
    return MAX_ID_LENGTH if name in _ID_FIELDS or name.endswith("_id") else MAX_STRING_LENGTH


def _well_known(full_name: str) -> Any:
    """A test that a Duration or Timestamp is one check_message accepts; None for others."""
    check = {_DURATION: _duration, _TIMESTAMP: _timestamp}.get(full_name)
    if check is None:
        return None

    def passes(msg: Message) -> bool:
        probe: list[Diagnostic] = []
        check(msg, "", probe)
        return not probe

    return passes


_CHECKS = spec_words.Checks(_string_limit, _well_known)


# Per field: (type, map entry's key and value fields or None, repeated, string limit or None).
_Facts = tuple[int, tuple[FieldDescriptor, FieldDescriptor] | None, bool, int | None]
_FACTS: dict[FieldDescriptor, _Facts] = {}
_SPECIAL = frozenset({_DURATION, _TIMESTAMP, _VALUE, _STRUCT, _LIST})
_MESSAGE_TYPES = (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)
_DOUBLE_TYPES = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_TYPE_STRING = FieldDescriptor.TYPE_STRING


def _facts(field: FieldDescriptor) -> _Facts:
    facts = _FACTS.get(field)
    if facts is None:
        entry = field.message_type if _is_map(field) else None
        pair = (entry.fields_by_name["key"], entry.fields_by_name["value"]) if entry else None
        limit = _string_limit(field) if field.type == FieldDescriptor.TYPE_STRING else None
        facts = _FACTS[field] = (field.type, pair, _repeated(field), limit)
    return facts


# Per message type, what `_clean` does with it: walk its fields, or one of these.
_FIELDS, _JSON_VALUE, _JSON_OTHER, _IS_DURATION, _IS_TIMESTAMP = range(5)
_TYPE_ACTIONS: dict[Descriptor, int] = {}


def _type_action(desc: Descriptor) -> int:
    action = _TYPE_ACTIONS.get(desc)
    if action is None:
        name = desc.full_name
        action = _TYPE_ACTIONS[desc] = {
            _VALUE: _JSON_VALUE,
            _STRUCT: _JSON_OTHER,
            _LIST: _JSON_OTHER,
            _DURATION: _IS_DURATION,
            _TIMESTAMP: _IS_TIMESTAMP,
        }.get(name, _FIELDS)
    return action


def _clean(message: Message, skip: frozenset[str]) -> bool:
    """True when `message` holds nothing `check_message` would report: the same walk without
    paths, so a valid workflow of 10,000 nodes is checked without building 60,000 of them.
    Anything doubtful answers False, and the full walk says what and where. (Per-type and
    per-field facts are cached and strings checked inline: it runs on every registration.)"""
    stack: list[Any] = [message]
    pop, push, extend = stack.pop, stack.append, stack.extend
    known_facts, known_actions = _FACTS.get, _TYPE_ACTIONS.get
    isfinite = math.isfinite
    while stack:
        msg = pop()
        desc = msg.DESCRIPTOR
        if skip and desc.full_name in skip:
            continue
        action = known_actions(desc)
        if action is None:
            action = _type_action(desc)
        if action == _JSON_VALUE:
            kind = msg.WhichOneof("kind")
            if kind == "number_value":
                if not isfinite(msg.number_value):
                    return False
            elif kind == "string_value":
                if "\x00" in msg.string_value:
                    return False
            elif (kind == "struct_value" or kind == "list_value") and not _clean_json(msg):
                return False
            continue
        if action != _FIELDS:
            if action == _JSON_OTHER:
                if not _clean_json(msg):
                    return False
            else:
                probe: list[Diagnostic] = []
                (_duration if action == _IS_DURATION else _timestamp)(msg, "", probe)
                if probe:
                    return False
            continue
        for field, value in msg.ListFields():
            facts = known_facts(field) or _facts(field)
            kind, pair, repeated, limit = facts
            if kind == _TYPE_STRING:
                if repeated:
                    for item in value:
                        if "\x00" in item or (limit is not None and len(item) > limit):
                            return False
                elif "\x00" in value or (limit is not None and len(value) > limit):
                    return False
            elif pair is not None:
                key_field, value_field = pair
                for key in value:
                    if not _clean_scalar(key_field, _facts(key_field), key):
                        return False
                    item = value[key]
                    if value_field.type in _MESSAGE_TYPES:
                        push(item)
                    elif not _clean_scalar(value_field, _facts(value_field), item):
                        return False
            elif kind in _MESSAGE_TYPES:
                if repeated:
                    extend(value)
                else:
                    push(value)
            elif repeated:
                if not all(_clean_scalar(field, facts, item) for item in value):
                    return False
            elif not _clean_scalar(field, facts, value):
                return False
    return True


def _clean_scalar(field: FieldDescriptor, facts: _Facts, value: Any) -> bool:
    kind, _, _, limit = facts
    if kind == FieldDescriptor.TYPE_STRING:
        return "\x00" not in value and (limit is None or len(value) <= limit)
    if kind in _DOUBLE_TYPES:
        return math.isfinite(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        return enum is None or value in enum.values_by_number
    return True


def _clean_json(msg: Message) -> bool:
    """A Value, Struct or ListValue without NaN, infinities or NUL characters."""
    stack: list[Any] = [msg]
    while stack:
        item = stack.pop()
        name = item.DESCRIPTOR.full_name
        if name == _VALUE:
            kind = item.WhichOneof("kind")
            if kind == "number_value":
                if not math.isfinite(item.number_value):
                    return False
            elif kind == "string_value":
                if "\x00" in item.string_value:
                    return False
            elif kind == "struct_value":
                stack.append(item.struct_value)
            elif kind == "list_value":
                stack.append(item.list_value)
        elif name == _STRUCT:
            for key, child in item.fields.items():
                if "\x00" in key:
                    return False
                stack.append(child)
        else:
            stack.extend(item.values)
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: str) -> str:
    if _IDENT.fullmatch(key):
        return _join(path, key)
    return f"{path}[{json.dumps(key[:40] + ('…' if len(key) > 40 else ''))}]"


def _message(
    msg: Message,
    path: str,
    problems: list[Diagnostic],
    stack: list[tuple[Any, str]],
    skip: frozenset[str],
) -> None:
    name = msg.DESCRIPTOR.full_name
    if name in skip:
        return
    if name == _DURATION:
        _duration(msg, path, problems)
        return
    if name == _TIMESTAMP:
        _timestamp(msg, path, problems)
        return
    if name in (_VALUE, _STRUCT, _LIST):
        stack.append((_JsonNode(msg), path))
        return
    for field, value in msg.ListFields():
        where = _join(path, word(field))  # the file's word: `pass`, not `pass_node`
        if _is_map(field):
            _map(field, value, where, problems, stack)
        elif _repeated(field):
            for i, item in enumerate(value):
                _field(field, item, f"{where}[{i}]", problems, stack)
        else:
            _field(field, value, where, problems, stack)


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6.31; `label` before
    if flag is not None:
        return bool(flag)
    # types-protobuf 7 describes only the newer protobuf: `label` is looked up by name.
    return bool(getattr(field, "label", None) == FieldDescriptor.LABEL_REPEATED)


def _is_map(field: FieldDescriptor) -> bool:
    entry: Descriptor | None = field.message_type
    return bool(entry is not None and entry.GetOptions().map_entry)


def _map(
    field: FieldDescriptor,
    value: Any,
    path: str,
    problems: list[Diagnostic],
    stack: list[tuple[Any, str]],
) -> None:
    entry = field.message_type
    if entry is None:  # not reached: _is_map said it is a map entry
        return
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for key in value:
        if isinstance(key, str):
            _string(key_field, key, f"{path} key {json.dumps(key[:40])}", problems)
        where = _key(path, key) if isinstance(key, str) else f"{path}[{key}]"
        _field(value_field, value[key], where, problems, stack)


def _field(
    field: FieldDescriptor,
    value: Any,
    path: str,
    problems: list[Diagnostic],
    stack: list[tuple[Any, str]],
) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE or kind == FieldDescriptor.TYPE_GROUP:
        stack.append((value, path))
    elif kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            known = ", ".join(v.name for v in enum.values if v.number != 0)
            problems.append(
                Diagnostic(path, f"unknown value {value} of {enum.name}; expected one of {known}")
            )
    elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if not math.isfinite(value):
            problems.append(Diagnostic(path, f"must be a finite number, not {value}"))
    elif kind == FieldDescriptor.TYPE_STRING:
        _string(field, value, path, problems)


def _string(field: FieldDescriptor, value: str, path: str, problems: list[Diagnostic]) -> None:
    if "\x00" in value:
        problems.append(Diagnostic(path, "must not contain NUL characters (\\u0000)"))
    limit = _string_limit(field)
    if limit is not None and len(value) > limit:
        problems.append(Diagnostic(path, f"at most {limit} characters, got {len(value)}"))


def _duration(msg: Any, path: str, problems: list[Diagnostic]) -> None:
    seconds, nanos = msg.seconds, msg.nanos
    if not -999_999_999 <= nanos <= 999_999_999:
        problems.append(Diagnostic(path, f"nanos must be within ±999,999,999, got {nanos}"))
    elif (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        problems.append(
            Diagnostic(path, f"seconds ({seconds}) and nanos ({nanos}) must have the same sign")
        )
    if abs(seconds) > MAX_DURATION_SECONDS:
        problems.append(Diagnostic(path, "out of range: at most ±10,000 years"))


def _timestamp(msg: Any, path: str, problems: list[Diagnostic]) -> None:
    if not 0 <= msg.nanos <= 999_999_999:
        problems.append(Diagnostic(path, f"nanos must be within 0..999,999,999, got {msg.nanos}"))
    if not MIN_TIMESTAMP_SECONDS <= msg.seconds <= MAX_TIMESTAMP_SECONDS:
        problems.append(Diagnostic(path, "out of range: years 0001 to 9999"))


class _JsonNode:
    """A Value, Struct or ListValue still to walk (kept distinct from other messages)."""

    __slots__ = ("msg",)

    def __init__(self, msg: Message) -> None:
        self.msg = msg


def _json(
    node: _JsonNode,
    path: str,
    problems: list[Diagnostic],
    stack: list[tuple[Any, str]],
) -> None:
    msg = node.msg
    name = msg.DESCRIPTOR.full_name
    # Matched by name, not class: a message may come from another descriptor pool.
    if name == _VALUE:
        value = cast(struct_pb2.Value, msg)
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            if not math.isfinite(value.number_value):
                problems.append(
                    Diagnostic(
                        path or "value", f"must be a finite number, not {value.number_value}"
                    )
                )
            return
        if kind == "string_value":
            if "\x00" in value.string_value:
                problems.append(
                    Diagnostic(path or "value", "must not contain NUL characters (\\u0000)")
                )
            return
        if kind == "struct_value":
            msg, name = value.struct_value, _STRUCT
        elif kind == "list_value":
            msg, name = value.list_value, _LIST
        else:
            return
    if name == _STRUCT:
        for key, item in cast(struct_pb2.Struct, msg).fields.items():
            if "\x00" in key:
                problems.append(
                    Diagnostic(
                        f"{path} key {json.dumps(key[:40])}", "must not contain NUL characters"
                    )
                )
            stack.append((_JsonNode(item), _key(path, key)))
    else:
        for i, item in enumerate(cast(struct_pb2.ListValue, msg).values):
            stack.append((_JsonNode(item), f"{path}[{i}]"))
