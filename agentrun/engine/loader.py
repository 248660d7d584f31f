"""Workflow files (YAML or JSON text) to `agentrun.v1.WorkflowSpec`.

Two passes, as FORMAT.md fixes: the first reads the text into plain values and walks them against
the message descriptors, normalising the conveniences (short enums, human durations, map
shorthands) and collecting every problem with its field path; only a clean document is turned
into the message, so that no first error hides the rest. The walk does every check protobuf's
JSON parser would and yields constructor arguments, and the C constructor builds the message:
json_format.ParseDict would cost ~20 us a node in Python (200 ms for 10,000 nodes).

YAML is read from parser events rather than through PyYAML's constructor: that is where anchors
and aliases can be refused before anything is built (a billion-laughs document fails at its first
anchor), where depth is bounded without recursion, and where YAML 1.2 core scalars are resolved
(`on`, `yes`, `off` stay strings; no sexagesimal numbers, no timestamps).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from agentrun import spec_words
from agentrun.engine.durations import parse_duration, to_seconds_nanos
from agentrun.engine.errors import Diagnostic, InvalidWorkflow, join_path
from agentrun.v1.workflow_pb2 import Transitions, WorkflowSpec


class _PyEventParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python event parser, for builds without libyaml."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


try:  # libyaml when present: the same events, several times faster
    from yaml.cyaml import CParser as _EventParser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _EventParser = _PyEventParser  # type: ignore[assignment,misc]


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "load_document",
    "load_workflow",
    "spec_from_dict",
    "spec_to_dict",
]

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
_QUOTE_HINT = "quote strings that hold ${{ }}"


class _Refused(Exception):
    """A problem after which the text cannot be read further (syntax, aliases, depth, size)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------------------------
# Public API


def load_workflow(text: str | bytes, *, filename: str = "") -> WorkflowSpec:
    """Reads a workflow file; raises InvalidWorkflow listing every problem found."""
    try:
        decoded = _decode(text)
        is_json = filename.lower().endswith(".json") or decoded.lstrip().startswith("{")
        document = _parse_json(decoded) if is_json else _parse_yaml(decoded)
    except _Refused as refused:
        raise InvalidWorkflow([Diagnostic("", _where(filename) + refused.message)]) from None
    return _build(document)


def load_document(text: str | bytes, *, filename: str = "") -> dict[str, Any]:
    """A workflow file as its normalised protobuf JSON dict: full enum names, `"1800s"`
    durations, shorthands expanded; what `agentrun` prints and stores."""
    return spec_to_dict(load_workflow(text, filename=filename))


def spec_from_dict(document: Mapping[str, Any]) -> WorkflowSpec:
    """A spec from its protobuf JSON dict (a stored spec or a hand-built one), with the same
    conveniences and checks as files, so that what loads from a file also loads from storage."""
    return _build(document)


def spec_to_dict(spec: WorkflowSpec) -> dict[str, Any]:
    """The protobuf JSON mapping with snake_case names and the file words of renamed fields
    (`pass`, `from`): what files and stored specs look like."""
    return spec_words.to_dict(spec)


def _where(filename: str) -> str:
    return f"{filename}: " if filename else ""


def _build(document: Any) -> WorkflowSpec:
    """Pass 1 checks and normalises into constructor arguments; only a clean document is built."""
    if document is None:
        raise InvalidWorkflow([Diagnostic("", "the document is empty; a workflow is a mapping")])
    if not isinstance(document, Mapping):
        raise InvalidWorkflow(
            [Diagnostic("", f"a workflow is a mapping at the top level, got {_describe(document)}")]
        )
    errors: list[Diagnostic] = []
    try:
        arguments = _walk_message(_ROOT, document, "", errors, 1)
        if not errors:
            return WorkflowSpec(**arguments)
    except UnicodeEncodeError as exc:  # a lone surrogate in a hand-built dict
        errors.append(Diagnostic("", f"a string is not valid Unicode: {exc.reason}"))
    except (TypeError, ValueError) as exc:  # pass 1 should have caught it; say so plainly anyway
        errors.append(Diagnostic("", f"not a valid WorkflowSpec: {exc}"))
    raise InvalidWorkflow(errors)


# --------------------------------------------------------------------------------------------
# Reading text


def _decode(text: str | bytes) -> str:
    if isinstance(text, str):
        if len(text) > MAX_BYTES:
            raise _Refused(_too_large(len(text)))
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _Refused(f"invalid character at offset {exc.start} (a lone surrogate)") from None
        if size > MAX_BYTES:
            raise _Refused(_too_large(size))
        return text.removeprefix("\ufeff")
    if not isinstance(text, (bytes, bytearray, memoryview)):
        raise _Refused(f"a workflow is text or bytes, got {type(text).__name__}")
    if len(text) > MAX_BYTES:
        raise _Refused(_too_large(len(text)))
    try:
        return bytes(text).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = bytes(text)[exc.start]
        raise _Refused(f"not valid UTF-8: byte 0x{bad:02x} at offset {exc.start}") from None


def _too_large(size: int) -> str:
    return f"the document is {size} bytes; the limit is {MAX_BYTES} bytes (1 MiB)"


class _Noted(dict):  # type: ignore[type-arg]
    """A mapping that carries reading problems (duplicate keys, mappings used as keys) to the
    walker, which reports them with the mapping's field path."""

    notes: list[tuple[Any, str]]


def _noted(mapping: dict[Any, Any], notes: list[tuple[Any, str]]) -> _Noted:
    result = _Noted(mapping)
    result.notes = notes
    return result


# JSON ---------------------------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _parse_json(text: str) -> Any:
    """Depth is bounded by the walk (MAX_DEPTH); deeper than json's own recursion bound, which
    it enforces without touching the C stack, is a RecursionError here, reported the same way."""
    try:
        document = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise _Refused(f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise _Refused(_too_deep("")) from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(document)
    return document


def _refuse_lone_surrogates(document: Any) -> None:
    """`"\\ud800"` is valid JSON but not Unicode; protobuf strings must be UTF-8."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"\\u{ord(exc.object[exc.start]):04x}"
        message = f"invalid JSON: the escape {code} is half a surrogate pair, not a character"
        raise _Refused(message) from None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) == len(pairs):
        return mapping
    seen: set[str] = set()
    notes = []
    for key, _ in pairs:
        if key in seen:
            notes.append((key, f"duplicate key `{key}`"))
        seen.add(key)
    return _noted(mapping, notes)


def _json_constant(name: str) -> Any:
    raise _Refused(f"invalid JSON: {name} is not a JSON value")


def _too_deep(where: str) -> str:
    return f"nesting deeper than {MAX_DEPTH} levels{where}; a workflow never needs that many"


# YAML ---------------------------------------------------------------------------------------

_YAML_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_YAML_BOOL = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}
_YAML_INT = re.compile(r"[-+]?[0-9]+")
_YAML_NUMBER = re.compile(
    r"(?P<int>[-+]?[0-9]+)"
    r"|0o(?P<oct>[0-7]+)"
    r"|0x(?P<hex>[0-9a-fA-F]+)"
    r"|(?P<float>[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)"
    r"|(?P<inf>[-+]?\.(?:inf|Inf|INF))"
    r"|(?P<nan>\.(?:nan|NaN|NAN))"
)
_TAG = "tag:yaml.org,2002:"
_NUMERIC_START = frozenset("-+.0123456789")


def _resolve_plain(value: str) -> Any:
    """YAML 1.2 core schema: null, bool, int (decimal, 0o, 0x), float; all else a string."""
    if value in _YAML_NULL:
        return None
    if value in _YAML_BOOL:
        return _YAML_BOOL[value]
    if value[0] not in _NUMERIC_START:
        return value
    match = _YAML_NUMBER.fullmatch(value)
    if match is None:
        return value
    kind = match.lastgroup
    try:
        if kind == "int":
            return int(value)
        if kind == "oct":
            return int(match["oct"], 8)
        if kind == "hex":
            return int(match["hex"], 16)
    except ValueError:  # an integer too long for Python's int() limit: keep the text
        return value
    if kind == "inf":
        return -math.inf if value[0] == "-" else math.inf
    return math.nan if kind == "nan" else float(value)


def _resolve_scalar(event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag == "!":
        return event.value
    if tag == _TAG + "str":
        return event.value
    if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
        value = _resolve_plain(event.value)
        kind = tag.removeprefix(_TAG)
        expected = {"int": int, "float": (int, float), "bool": bool, "null": type(None)}[kind]
        if isinstance(value, expected) and not (kind != "bool" and isinstance(value, bool)):
            return float(value) if kind == "float" else value
        raise _Refused(f"{_mark(event)}: {event.value!r} is not a valid !!{kind}")
    raise _Refused(f"{_mark(event)}: YAML tag {tag} is not supported")


def _mark(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _parse_yaml(text: str) -> Any:
    try:
        return _build_from_events(_EventParser(text))
    except yaml.MarkedYAMLError as exc:
        raise _Refused(_yaml_syntax_message(exc, text)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        character = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise _Refused(
            f"YAML syntax error at line {line}, column {column}: {exc.reason} (#x{character:04x})"
        ) from None
    except yaml.YAMLError as exc:
        raise _Refused(f"invalid YAML: {exc}") from None


def _yaml_syntax_message(exc: yaml.MarkedYAMLError, text: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    if "nesting depth" in problem:
        return _too_deep(f" at line {mark.line + 1}" if mark else "")
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    message = f"YAML syntax error{where}: {problem}"
    if exc.context and exc.problem:
        message += f" ({exc.context})"
    lines = text.splitlines()
    if mark and mark.line < len(lines) and "${{" in lines[mark.line]:
        message += f"; {_QUOTE_HINT}"
    return message


# Frame slots: container, is_mapping, pending key (or _NO_KEY), key event, notes, start event.
_NO_KEY: Any = object()


def _build_from_events(parser: Any) -> Any:
    """Plain values from parser events, refusing anchors, aliases, excess depth and a second
    document as soon as they appear."""
    stack: list[list[Any]] = []
    root: Any = None
    documents = 0
    scalar_event, mapping_start, sequence_start = (
        yaml.ScalarEvent,
        yaml.MappingStartEvent,
        yaml.SequenceStartEvent,
    )
    while True:
        event = parser.get_event()
        kind = type(event)
        if kind is scalar_event:
            if event.anchor is not None:
                raise _Refused(_anchor_message(event))
            if event.tag is not None:
                value: Any = _resolve_scalar(event)
            elif event.implicit[0]:
                value = _resolve_plain(event.value)
            else:
                value = event.value
        elif kind is mapping_start or kind is sequence_start:
            if event.anchor is not None:
                raise _Refused(_anchor_message(event))
            if event.tag is not None and event.tag not in ("!", _TAG + "map", _TAG + "seq"):
                raise _Refused(f"{_mark(event)}: YAML tag {event.tag} is not supported")
            if len(stack) >= MAX_DEPTH:
                raise _Refused(_too_deep(f" at line {event.start_mark.line + 1}"))
            is_mapping = kind is mapping_start
            stack.append([{} if is_mapping else [], is_mapping, _NO_KEY, None, None, event])
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            value = _noted(frame[0], frame[4]) if frame[4] else frame[0]
            event = frame[5]  # where the container started: what a key error should name
        elif kind is yaml.AliasEvent:
            raise _Refused(
                f"{_mark(event)}: YAML aliases (*{event.anchor}) are not allowed; "
                "write the value out"
            )
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Refused(
                    f"{_mark(event)}: a second YAML document (---); a file holds one workflow"
                )
            continue
        elif kind is yaml.StreamEndEvent or event is None:
            return root
        else:  # stream start, document end
            continue
        if not stack:
            root = value
            continue
        frame = stack[-1]
        if not frame[1]:
            frame[0].append(value)
        elif frame[2] is _NO_KEY:
            frame[2] = value
            frame[3] = event
        else:
            key = frame[2]
            frame[2] = _NO_KEY
            if type(key) is str and key not in frame[0]:
                frame[0][key] = value
            else:
                _store(frame, key, value)


def _store(frame: list[Any], key: Any, value: Any) -> None:
    """The slow path of a mapping entry: keys that are not strings, or are repeated."""
    mapping, key_event = frame[0], frame[3]
    if isinstance(key, (dict, list)):
        shape = "a mapping" if isinstance(key, dict) else "a list"
        _note(frame, None, f"{shape} is used as a key at {_mark(key_event)}; {_QUOTE_HINT}")
    elif key in mapping:
        _note(frame, key, f"duplicate key `{key}` at {_mark(key_event)}")
    else:
        mapping[key] = value


def _note(frame: list[Any], key: Any, message: str) -> None:
    if frame[4] is None:
        frame[4] = []
    frame[4].append((key, message))


def _anchor_message(event: Any) -> str:
    return f"{_mark(event)}: YAML anchors (&{event.anchor}) are not allowed; write the value out"


# --------------------------------------------------------------------------------------------
# Pass 1: the walk against descriptors. It returns constructor arguments: nested dicts for
# messages, full names for enums, {seconds, nanos} for durations, built Struct/Value messages.

_Walk = Callable[[Any, str, list[Diagnostic], int], Any]
_Shorthand = Callable[["_Field", Any, str, list[Diagnostic], int], Any]
_NONE: Any = object()  # "no shorthand applies": the field takes the generic walk


@dataclass(slots=True)
class _Enum:
    label: str
    full: frozenset[str]
    short: dict[str, str]  # lower-case short name -> full name
    allowed: str


@dataclass(slots=True)
class _Field:
    name: str  # the proto name, what the message's constructor takes
    walk: _Walk
    keeps_null: bool = False  # google.protobuf.Value: null is a value, not an absence
    message: _Message | None = None


@dataclass(slots=True)
class _Message:
    full_name: str
    label: str
    fields: dict[str, _Field] = field(default_factory=dict)  # by file word (spec_words)
    camel: dict[str, str] = field(default_factory=dict)  # lower-cased camelCase -> snake_case
    proto_names: dict[str, str] = field(default_factory=dict)  # renamed field -> its file word
    oneofs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (name, word)
    shorthand: _Shorthand | None = None


_MESSAGES: dict[str, _Message] = {}
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


def _info(descriptor: Descriptor) -> _Message:
    """Per-message field table, built once: the walk then costs a dict lookup per key."""
    cached = _MESSAGES.get(descriptor.full_name)
    if cached is not None:
        return cached
    info = _Message(descriptor.full_name, descriptor.name)
    _MESSAGES[descriptor.full_name] = info  # before the fields: messages may refer to themselves
    info.shorthand = _MESSAGE_SHORTHANDS.get(descriptor.full_name)
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


def _field_info(fd: FieldDescriptor) -> _Field:
    message_type = fd.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        return _Field(fd.name, _map_walker(_single_walker(message_type.fields_by_name["value"])))
    walk = _single_walker(fd)
    if fd.is_repeated:
        walk = _list_walker(walk, strings=fd.type == FieldDescriptor.TYPE_STRING)
    info = _info(message_type) if _is_plain_message(fd) else None
    keeps_null = message_type is not None and message_type.full_name == "google.protobuf.Value"
    return _Field(fd.name, walk, keeps_null=keeps_null and not fd.is_repeated, message=info)


def _is_plain_message(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.full_name not in _WELL_KNOWN


def _single_walker(fd: FieldDescriptor) -> _Walk:
    if fd.message_type is not None:
        well_known = _WELL_KNOWN.get(fd.message_type.full_name)
        if well_known is not None:
            return well_known
        info = _info(fd.message_type)
        return lambda value, path, errors, depth: _walk_message(info, value, path, errors, depth)
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


def _walk_message(
    info: _Message, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            errors.append(_expected(path, f"a mapping of {info.label} fields", value))
            return {}
        if type(value) is _Noted:
            _report_notes(value, path, errors)
    if depth > MAX_DEPTH:
        errors.append(Diagnostic(path, _too_deep("")))
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
            if fixed is not _NONE:
                out[spec.name] = fixed
                continue
        out[spec.name] = spec.walk(item, sub, errors, depth + 1)
    if info.oneofs:
        _check_oneofs(info, out, path, errors)
    return out


def _list_walker(walk_item: _Walk, *, strings: bool) -> _Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> list[Any]:
        if type(value) is not list and not isinstance(value, (list, tuple)):
            hint = f"; write [{value}]" if isinstance(value, (str, int, float)) else ""
            errors.append(_expected(path, "a list", value, hint))
            return []
        if strings and all(type(item) is str for item in value):
            return list(value)
        if depth > MAX_DEPTH:
            errors.append(Diagnostic(path, _too_deep("")))
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


def _map_walker(walk_value: _Walk) -> _Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            errors.append(_expected(path, "a mapping", value))
            return {}
        if type(value) is _Noted:
            _report_notes(value, path, errors)
        if depth > MAX_DEPTH:
            errors.append(Diagnostic(path, _too_deep("")))
            return {}
        out = {}
        for key, item in value.items():
            text = _map_key(key)
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


def _check_oneofs(info: _Message, out: dict[str, Any], path: str, errors: list[Diagnostic]) -> None:
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


def _enum_walker(enum: _Enum) -> _Walk:
    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
        if isinstance(value, str):
            if value in enum.full:
                return value
            full = enum.short.get(value.lower())
            if full is not None:
                return full
            message = f"unknown {enum.label} {value!r}; expected one of: {enum.allowed}"
        else:
            message = f"expected one of: {enum.allowed}; got {_describe(value)}"
        errors.append(Diagnostic(path, message))
        return 0

    return walk


def _int_walker(bits: int, signed: bool) -> _Walk:
    low = -(1 << (bits - 1)) if signed else 0
    high = (1 << (bits - 1 if signed else bits)) - 1

    def walk(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
        number: int | None = None
        if type(value) is int:
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and bits == 64 and _YAML_INT.fullmatch(value):
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


def _walk_duration(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
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


_WELL_KNOWN: dict[str, _Walk] = {
    "google.protobuf.Duration": _walk_duration,
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
        errors.append(Diagnostic(path, _too_deep("")))
        return None
    if isinstance(value, Mapping):
        if type(value) is _Noted:
            _report_notes(value, path, errors)
        out = {}
        for key, item in value.items():
            text = _map_key(key)
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

def _map_key(key: Any) -> str | None:
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
        return f"{_describe(key)} is used as a key; {_QUOTE_HINT}"
    return f"keys are strings, got {_describe(key)}"


def _key_problem(info: _Message, key: Any, path: str) -> Diagnostic:
    if not isinstance(key, str):
        if isinstance(key, (dict, list, tuple)):
            return Diagnostic(path, _bad_key(key))
        text = f"field names are strings; {_describe(key)} is not a field of {info.label}"
        return Diagnostic(join_path(path, str(key)), text)
    return Diagnostic(join_path(path, key), _unknown_field(info, key))


def _unknown_field(info: _Message, key: str) -> str:
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
    if type(value) is _Noted:
        hint += "".join(f"; {message}" for _, message in value.notes)
    elif isinstance(value, Mapping) and len(value) == 1 and None in value.values():
        hint += f" (braces make a mapping in YAML: {_QUOTE_HINT})"
    return Diagnostic(path, f"expected {what}, got {_describe(value)}{hint}")


def _describe(value: Any) -> str:
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


# Shorthands ---------------------------------------------------------------------------------


def _machine_state_shorthands(
    spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> Any:
    """The mapping forms of `after` and `on`, and a bare target name for `on_done` and
    `on_error` (as `on: {E: target}` allows); _NONE leaves the field to the generic walk."""
    if spec.name in ("on_done", "on_error") and isinstance(value, str):
        return spec.walk({"target": value}, path, errors, depth)
    if not isinstance(value, Mapping):
        return _NONE
    if spec.name == "after":
        return _after_shorthand(spec, value, path, errors, depth)
    if spec.name == "on":
        return _on_shorthand(value, path, errors, depth)
    if spec.name == "invoke" and "workflow" in value:
        return _invoke_shorthand(spec, value, path, errors, depth)
    return _NONE


def _after_shorthand(
    spec: _Field, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> list[dict[str, Any]]:
    """`after: {30m: {target: x}}` (or `{30m: x}`) is `after: [{delay: 1800s, target: x}]`."""
    assert spec.message is not None
    if type(value) is _Noted:
        _report_notes(value, path, errors)
    timers = []
    for key, item in value.items():
        delay = _map_key(key)
        if delay is None:
            errors.append(
                Diagnostic(path, f"`after` keys are durations such as 30m, got {_describe(key)}")
            )
            continue
        sub = join_path(path, delay)
        body = {"target": item} if isinstance(item, str) else item
        if isinstance(body, Mapping) and "delay" in body:
            message = "the key gives the delay already; remove `delay`"
            errors.append(Diagnostic(join_path(sub, "delay"), message))
            continue
        timer = _walk_message(spec.message, body, sub, errors, depth + 1)
        timer["delay"] = _walk_duration(delay, sub, errors, depth + 1)
        timers.append(timer)
    return timers


def _on_shorthand(
    value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    if type(value) is _Noted:
        _report_notes(value, path, errors)
    out = {}
    for key, item in value.items():
        event = _map_key(key)
        if event is None:
            errors.append(Diagnostic(path, f"event names are strings, got {_describe(key)}"))
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
    info = _MESSAGES[Transitions.DESCRIPTOR.full_name]
    transitions = info.fields["transitions"]
    if isinstance(value, str):
        value = [{"target": value}]
    if isinstance(value, Mapping) and value and "transitions" not in value:  # `{}` is the full form
        assert transitions.message is not None
        transition = _walk_message(transitions.message, value, path, errors, depth)
        return {"transitions": [transition]}
    if isinstance(value, (list, tuple)):
        return {"transitions": transitions.walk(value, path, errors, depth)}
    return _walk_message(info, value, path, errors, depth)


def _invoke_shorthand(
    spec: _Field, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    """FORMAT.md's state machine writes `invoke: {workflow: fulfil}`: "invoke workflow fulfil"
    reads better than `name:` there, so `workflow` is accepted as the child workflow's name."""
    assert spec.message is not None
    if "name" in value:
        message = "give the workflow as `name` or `workflow`, not both"
        errors.append(Diagnostic(join_path(path, "workflow"), message))
        return {}
    body = {("name" if key == "workflow" else key): item for key, item in value.items()}
    return _walk_message(spec.message, body, path, errors, depth)


_MESSAGE_SHORTHANDS: dict[str, _Shorthand] = {
    "agentrun.v1.MachineState": _machine_state_shorthands,
}

# Built at import, under the import lock: a table half-built by one thread is never seen by another.
_ROOT = _info(WorkflowSpec.DESCRIPTOR)
_info(Transitions.DESCRIPTOR)
