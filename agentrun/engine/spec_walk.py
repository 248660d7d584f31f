"""The loader's walk: plain values (from a file or a stored spec) against the descriptors of
`agentrun.v1.WorkflowSpec`, into the message's constructor arguments.

It does every check protobuf's JSON parser would, accepts the conveniences of files (short
enum names, human durations, the shorthands a message installs with `install_shorthand`) and
collects every problem with its field path instead of stopping at the first. It returns
constructor arguments: nested dicts for messages, full names for enums, {seconds, nanos} for
durations, built Struct/Value messages; the C constructor then builds the message
(json_format.ParseDict would cost ~20 us a node in Python, 200 ms for 10,000 nodes).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from agentrun import spec_words
from agentrun.engine.durations import parse_duration, to_seconds_nanos
from agentrun.engine.errors import Diagnostic, join_path
from agentrun.engine.spec_text import MAX_DEPTH, QUOTE_HINT, Noted, too_deep

__all__ = [
    "NO_SHORTHAND",
    "FieldInfo",
    "MessageInfo",
    "Shorthand",
    "describe",
    "install_shorthand",
    "map_key",
    "message_info",
    "report_notes",
    "walk_duration",
    "walk_message",
]

Walk = Callable[[Any, str, list[Diagnostic], int], Any]
# (the field, its value, its path, the problems, the depth) -> constructor arguments, or
# NO_SHORTHAND: the field takes the generic walk.
Shorthand = Callable[["FieldInfo", Any, str, list[Diagnostic], int], Any]
NO_SHORTHAND: Any = object()
_INT_TEXT = re.compile(r"[-+]?[0-9]+")


@dataclass(slots=True)
class _Enum:
    label: str
    full: frozenset[str]
    short: dict[str, str]  # lower-case short name -> full name
    allowed: str


@dataclass(slots=True)
class FieldInfo:
    name: str  # the proto name, what the message's constructor takes
    walk: Walk
    keeps_null: bool = False  # google.protobuf.Value: null is a value, not an absence
    message: MessageInfo | None = None


@dataclass(slots=True)
class MessageInfo:
    full_name: str
    label: str
    fields: dict[str, FieldInfo] = field(default_factory=dict)  # by file word (spec_words)
    camel: dict[str, str] = field(default_factory=dict)  # lower-cased camelCase -> snake_case
    proto_names: dict[str, str] = field(default_factory=dict)  # renamed field -> its file word
    oneofs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (name, word)
    shorthand: Shorthand | None = None


_INFOS: dict[str, MessageInfo] = {}
_INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (32, True),
    FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True),
    FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True),
    FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT32: (32, False),
    FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_UINT64: (64, False),
    FieldDescriptor.TYPE_FIXED64: (64, False),
}


def message_info(descriptor: Descriptor) -> MessageInfo:
    """Per-message field table, built once: the walk then costs a dict lookup per key."""
    cached = _INFOS.get(descriptor.full_name)
    if cached is not None:
        return cached
    info = MessageInfo(descriptor.full_name, descriptor.name)
    _INFOS[descriptor.full_name] = info  # before the fields: messages may refer to themselves
    for fd in descriptor.fields:
        file_word = spec_words.word(fd)
        info.fields[file_word] = _field_info(fd)
        if file_word != fd.name:
            info.proto_names[fd.name] = file_word
        elif fd.json_name != fd.name:
            info.camel[fd.json_name.lower()] = fd.name
    for oneof in descriptor.oneofs:
        if len(oneof.fields) > 1:
            info.oneofs[oneof.name] = [(fd.name, spec_words.word(fd)) for fd in oneof.fields]
    return info


def _field_info(fd: FieldDescriptor) -> FieldInfo:
    message_type = fd.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        return FieldInfo(fd.name, _map_walker(_single_walker(message_type.fields_by_name["value"])))
    walk = _single_walker(fd)
    if fd.is_repeated:
        walk = _list_walker(walk, strings=fd.type == FieldDescriptor.TYPE_STRING)
    info = (
        message_info(message_type) if message_type is not None and _is_plain_message(fd) else None
    )
    keeps_null = message_type is not None and message_type.full_name == "google.protobuf.Value"
    return FieldInfo(fd.name, walk, keeps_null=keeps_null and not fd.is_repeated, message=info)


def _is_plain_message(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.full_name not in _WELL_KNOWN


def _single_walker(fd: FieldDescriptor) -> Walk:
    if fd.message_type is not None:
        well_known = _WELL_KNOWN.get(fd.message_type.full_name)
        if well_known is not None:
            return well_known
        info = message_info(fd.message_type)
        return lambda value, path, errors, depth: walk_message(info, value, path, errors, depth)
    if fd.enum_type is not None:
        return _enum_walker(_enum_info(fd.enum_type, fd.name))
    if fd.type in _INT_TYPES:
        return _int_walker(*_INT_TYPES[fd.type])
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _walk_float
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _walk_bool
    return _walk_string


def _enum_info(descriptor: EnumDescriptor, label: str) -> _Enum:
    """Short names drop the prefix that the zero value (`BACKOFF_UNSPECIFIED`) declares."""
    names = [value.name for value in descriptor.values]
    zero = names[0]
    prefix = zero[: -len("UNSPECIFIED")] if zero.endswith("UNSPECIFIED") else ""
    short = {name.removeprefix(prefix).lower(): name for name in names if name.startswith(prefix)}
    short.pop("unspecified", None)
    return _Enum(label, frozenset(names), short, ", ".join(short))


# Messages, lists, maps ----------------------------------------------------------------------


def walk_message(
    info: MessageInfo, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            errors.append(_expected(path, f"a mapping of {info.label} fields", value))
            return {}
        if type(value) is Noted:
            _report_notes(value, path, errors)
    if depth > MAX_DEPTH:
        errors.append(Diagnostic(path, too_deep("")))
        return {}
    fields = info.fields
    shorthand = info.shorthand
    out: dict[str, Any] = {}
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            errors.append(_key_problem(info, key, path))
            continue
        if item is None and not spec.keeps_null:
            continue  # protobuf JSON: null means absent
        sub = f"{path}.{key}" if path else key
        if shorthand is not None:
            fixed = shorthand(spec, item, sub, errors, depth + 1)
            if fixed is not NO_SHORTHAND:
                out[spec.name] = fixed
                continue
        out[spec.name] = spec.walk(item, sub, errors, depth + 1)
    if info.oneofs:
        _check_oneofs(info, out, path, errors)
    return out


def _list_walker(walk_item: Walk, *, strings: bool) -> Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> list[Any]:
        if type(value) is not list and not isinstance(value, (list, tuple)):
            hint = f"; write [{value}]" if isinstance(value, (str, int, float)) else ""
            errors.append(_expected(path, "a list", value, hint))
            return []
        if strings and all(type(item) is str for item in value):
            return list(value)
        if depth > MAX_DEPTH:
            errors.append(Diagnostic(path, too_deep("")))
            return []
        out = []
        for index, item in enumerate(value):
            sub = f"{path}[{index}]"
            if item is None:
                errors.append(Diagnostic(sub, "null is not allowed in a list"))
                continue
            out.append(walk_item(item, sub, errors, depth + 1))
        return out

    return walk


def _map_walker(walk_value: Walk) -> Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            errors.append(_expected(path, "a mapping", value))
            return {}
        if type(value) is Noted:
            _report_notes(value, path, errors)
        if depth > MAX_DEPTH:
            errors.append(Diagnostic(path, too_deep("")))
            return {}
        out = {}
        for key, item in value.items():
            text = map_key(key)
            if text is None:
                errors.append(Diagnostic(path, _bad_key(key)))
                continue
            sub = join_path(path, text)
            if item is None:
                errors.append(Diagnostic(sub, "null is not allowed as a map value"))
                continue
            out[text] = walk_value(item, sub, errors, depth + 1)
        return out

    return walk


def _check_oneofs(
    info: MessageInfo, out: dict[str, Any], path: str, errors: list[Diagnostic]
) -> None:
    """Zero kinds is the validator's to report; two or more is unreadable, so it is ours."""
    for name, members in info.oneofs.items():
        present = [file_word for name, file_word in members if name in out]
        if len(present) < 2:
            continue
        listed = " and ".join(f"`{member}`" for member in present)
        if name == "kind":
            thing = info.label.lower()
            text = f"has {len(present)} kinds, {listed}; a {thing} has exactly one kind"
        else:
            text = f"{listed} are alternatives (one of `{name}`); set only one"
        errors.append(Diagnostic(path, text))


# Scalars ------------------------------------------------------------------------------------


def _walk_string(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if type(value) is str:
        return value
    errors.append(_expected(path, "a string", value))
    return ""


def _enum_walker(enum: _Enum) -> Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
        if isinstance(value, str):
            if value in enum.full:
                return value
            full = enum.short.get(value.lower())
            if full is not None:
                return full
            message = f"unknown {enum.label} {value!r}; expected one of: {enum.allowed}"
        else:
            message = f"expected one of: {enum.allowed}; got {describe(value)}"
        errors.append(Diagnostic(path, message))
        return 0

    return walk


def _int_walker(bits: int, signed: bool) -> Walk:
    low = -(1 << (bits - 1)) if signed else 0
    high = (1 << (bits - 1 if signed else bits)) - 1

    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
        number: int | None = None
        if type(value) is int:
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and bits == 64 and _INT_TEXT.fullmatch(value):
            number = int(value)  # protobuf JSON writes 64-bit integers as strings
        if number is None:
            errors.append(_expected(path, "an integer", value))
            return 0
        if not low <= number <= high:
            errors.append(Diagnostic(path, f"{number} is out of range ({low} to {high})"))
            return 0
        return number

    return walk


_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _walk_float(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, str) and value in _FLOAT_WORDS:
        return _FLOAT_WORDS[value]  # protobuf JSON's spelling of the non-finite doubles
    errors.append(_expected(path, "a number", value))
    return 0.0


def _walk_bool(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if type(value) is bool:
        return value
    errors.append(_expected(path, "true or false", value))
    return False


# Well-known types ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _duration(text: str) -> dict[str, int]:
    seconds, nanos = to_seconds_nanos(parse_duration(text))
    return {"seconds": seconds, "nanos": nanos}


def walk_duration(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if isinstance(value, str):
        try:
            return _duration(value)
        except ValueError as exc:
            errors.append(Diagnostic(path, str(exc)))
            return {}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    hint = f"; write {value}s" if number else ""
    errors.append(_expected(path, "a duration such as 30s", value, hint))
    return {}


def _walk_struct(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if not isinstance(value, Mapping):
        errors.append(_expected(path, "a mapping", value))
        return struct_pb2.Struct()
    struct = struct_pb2.Struct()
    struct.update(_json_value(value, path, errors, depth))
    return struct


def _walk_value(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    plain = _json_value(value, path, errors, depth)
    message = struct_pb2.Value()
    if plain is None:
        message.null_value = struct_pb2.NULL_VALUE
    elif isinstance(plain, bool):
        message.bool_value = plain
    elif isinstance(plain, (int, float)):
        message.number_value = plain
    elif isinstance(plain, str):
        message.string_value = plain
    elif isinstance(plain, dict):
        message.struct_value.SetInParent()  # so that `{}` is an empty object, not unset
        message.struct_value.update(plain)
    else:
        message.list_value.SetInParent()
        message.list_value.extend(plain)
    return message


def _walk_list_value(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    message = struct_pb2.ListValue()
    if not isinstance(value, (list, tuple)):
        errors.append(_expected(path, "a list", value))
        return message
    message.extend(_json_value(value, path, errors, depth))
    return message


_WELL_KNOWN: dict[str, Walk] = {
    "google.protobuf.Duration": walk_duration,
    "google.protobuf.Struct": _walk_struct,
    "google.protobuf.Value": _walk_value,
    "google.protobuf.ListValue": _walk_list_value,
}


def _json_value(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    """Free-form data for Struct/Value fields: any JSON value, with string keys."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.append(Diagnostic(path, f"{value!r} is not a JSON number"))
        return value
    if depth > MAX_DEPTH:
        errors.append(Diagnostic(path, too_deep("")))
        return None
    if isinstance(value, Mapping):
        if type(value) is Noted:
            _report_notes(value, path, errors)
        out = {}
        for key, item in value.items():
            text = map_key(key)
            if text is None:
                errors.append(Diagnostic(path, _bad_key(key)))
                continue
            out[text] = _json_value(item, join_path(path, text), errors, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [
            _json_value(item, f"{path}[{index}]", errors, depth + 1)
            for index, item in enumerate(value)
        ]
    errors.append(_expected(path, "a JSON value", value))
    return None


# Keys, paths and messages -------------------------------------------------------------------


def map_key(key: Any) -> str | None:
    """Scalar YAML keys (`200:`) become the strings protobuf JSON map keys are."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return None
    if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
        return str(key)
    return None


def _bad_key(key: Any) -> str:
    if isinstance(key, (dict, list, tuple)):
        return f"{describe(key)} is used as a key; {QUOTE_HINT}"
    return f"keys are strings, got {describe(key)}"


def _key_problem(info: MessageInfo, key: Any, path: str) -> Diagnostic:
    if not isinstance(key, str):
        if isinstance(key, (dict, list, tuple)):
            return Diagnostic(path, _bad_key(key))
        text = f"field names are strings; {describe(key)} is not a field of {info.label}"
        return Diagnostic(join_path(path, str(key)), text)
    return Diagnostic(join_path(path, key), _unknown_field(info, key))


def _unknown_field(info: MessageInfo, key: str) -> str:
    snake = info.camel.get(key.lower())
    if snake is not None and key != key.lower():
        return f"camelCase field names are not accepted; use snake_case `{snake}`"
    file_word = info.proto_names.get(key)
    if file_word is not None:
        return f"`{key}` is the field's name in generated code; workflow files write `{file_word}`"
    message = f"unknown field `{key}` in {info.label}"
    close = difflib.get_close_matches(key, list(info.fields), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean `{close[0]}`?"
    return message


def _report_notes(mapping: Any, path: str, errors: list[Diagnostic]) -> None:
    for key, message in mapping.notes:
        errors.append(Diagnostic(join_path(path, str(key)) if key is not None else path, message))


def _expected(path: str, what: str, value: Any, hint: str = "") -> Diagnostic:
    """Where a mapping stands for text, it is most likely an unquoted `{{ x }}` or `{ x }`."""
    if type(value) is Noted:
        hint += "".join(f"; {message}" for _, message in value.notes)
    elif isinstance(value, Mapping) and len(value) == 1 and None in value.values():
        hint += f" (braces make a mapping in YAML: {QUOTE_HINT})"
    return Diagnostic(path, f"expected {what}, got {describe(value)}{hint}")


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def report_notes(value: Any, path: str, errors: list[Diagnostic]) -> None:
    """The reading problems a mapping carries (duplicate keys, ...), if it carries any."""
    if type(value) is Noted:
        _report_notes(value, path, errors)


def install_shorthand(descriptor: Descriptor, shorthand: Shorthand) -> None:
    """Gives the fields of `descriptor`'s message a shorthand (tried before the generic walk).
    Called at import, under the import lock, before any walk reads the table."""
    message_info(descriptor).shorthand = shorthand
