"""Workflow files (YAML or JSON text) to `agentrun.v1.WorkflowSpec`.

Two passes, as FORMAT.md fixes: the first reads the text into plain values and walks them against
the message descriptors, normalising the conveniences (short enums, human durations, map
shorthands) and collecting every problem with its field path; only a clean document reaches
protobuf's JSON parser, whose first error would otherwise hide the rest.

YAML is read from parser events rather than through PyYAML's constructor: that is where anchors
and aliases can be refused before anything is built (a billion-laughs document fails at its first
anchor), where depth is bounded without recursion, and where YAML 1.2 core scalars are resolved
(`on`, `yes`, `off` stay strings; no sexagesimal numbers, no timestamps).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from agentrun.engine.durations import parse_duration, to_proto_json
from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.v1.workflow_pb2 import WorkflowSpec

try:  # libyaml when present: same events, several times faster
    from yaml.cyaml import CParser as _EventParser
except ImportError:  # pragma: no cover - depends on how PyYAML was built

    class _EventParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


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
    return _to_spec(load_document(text, filename=filename))


def load_document(text: str | bytes, *, filename: str = "") -> dict[str, Any]:
    """The normalised protobuf-JSON dict of a workflow file, before protobuf sees it."""
    try:
        decoded = _decode(text)
        is_json = filename.lower().endswith(".json") or decoded.lstrip().startswith("{")
        document = _parse_json(decoded) if is_json else _parse_yaml(decoded)
    except _Refused as refused:
        raise InvalidWorkflow([Diagnostic("", _where(filename) + refused.message)]) from None
    return _normalise(document)


def spec_from_dict(document: Mapping[str, Any]) -> WorkflowSpec:
    """A spec from its protobuf JSON dict (a stored spec or a hand-built one), with the same
    conveniences and checks as files, so that what loads from a file also loads from storage."""
    return _to_spec(_normalise(document))


def spec_to_dict(spec: WorkflowSpec) -> dict[str, Any]:
    """The protobuf JSON mapping with snake_case names: what files and stored specs look like."""
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def _where(filename: str) -> str:
    return f"{filename}: " if filename else ""


def _normalise(document: Any) -> dict[str, Any]:
    if document is None:
        raise InvalidWorkflow([Diagnostic("", "the document is empty; a workflow is a mapping")])
    if not isinstance(document, Mapping):
        raise InvalidWorkflow(
            [Diagnostic("", f"a workflow is a mapping at the top level, got {_describe(document)}")]
        )
    errors: list[Diagnostic] = []
    normalised = _walk_message(_info(WorkflowSpec.DESCRIPTOR), document, "", errors, 1)
    if errors:
        raise InvalidWorkflow(errors)
    return normalised


def _to_spec(document: dict[str, Any]) -> WorkflowSpec:
    try:
        return json_format.ParseDict(document, WorkflowSpec())
    except json_format.ParseError as exc:  # pass 1 should have caught it; say so plainly anyway
        raise InvalidWorkflow([Diagnostic("", str(exc))]) from None


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

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _parse_json(text: str) -> Any:
    _check_json_depth(text)
    try:
        return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise _Refused(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # pragma: no cover - _check_json_depth stops this first
        raise _Refused(_too_deep("")) from None


def _check_json_depth(text: str) -> None:
    """Depth from the brackets outside strings, counted in C-speed passes: json.loads itself
    would recurse, and a 100k-deep `[[[[` must fail before it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    deepest = max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)
    if deepest > MAX_DEPTH:
        raise _Refused(_too_deep(""))


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
_YAML_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_YAML_INT = re.compile(r"[-+]?[0-9]+")
_YAML_OCT = re.compile(r"0o[0-7]+")
_YAML_HEX = re.compile(r"0x[0-9a-fA-F]+")
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_YAML_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_YAML_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
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
    try:
        if _YAML_INT.fullmatch(value):
            return int(value)
        if _YAML_OCT.fullmatch(value):
            return int(value[2:], 8)
        if _YAML_HEX.fullmatch(value):
            return int(value[2:], 16)
        if _YAML_FLOAT.fullmatch(value):
            return float(value)
    except ValueError:  # an integer too long for Python's int() limit: keep the text
        return value
    if _YAML_INF.fullmatch(value):
        return -math.inf if value[0] == "-" else math.inf
    if _YAML_NAN.fullmatch(value):
        return math.nan
    return value


def _resolve_scalar(event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        return _resolve_plain(event.value) if event.implicit[0] else event.value
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
        return _build_from_events(_EventParser(text), text)
    except yaml.MarkedYAMLError as exc:
        raise _Refused(_yaml_syntax_message(exc, text)) from None
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


# Frame slots: container, is_mapping, pending key (or _NO_KEY), key event, notes.
_NO_KEY: Any = object()


def _build_from_events(parser: Any, text: str) -> Any:
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
            value: Any = _resolve_scalar(event)
        elif kind is mapping_start or kind is sequence_start:
            if event.anchor is not None:
                raise _Refused(_anchor_message(event))
            if event.tag is not None and event.tag not in ("!", _TAG + "map", _TAG + "seq"):
                raise _Refused(f"{_mark(event)}: YAML tag {event.tag} is not supported")
            if len(stack) >= MAX_DEPTH:
                raise _Refused(_too_deep(f" at line {event.start_mark.line + 1}"))
            is_mapping = kind is mapping_start
            stack.append([{} if is_mapping else [], is_mapping, _NO_KEY, None, None])
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            value = _noted(frame[0], frame[4]) if frame[4] else frame[0]
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
            _store(frame, value)


def _store(frame: list[Any], value: Any) -> None:
    mapping, key, key_event = frame[0], frame[2], frame[3]
    frame[2] = _NO_KEY
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
# Pass 1: the walk against descriptors


@dataclass(slots=True)
class _Enum:
    label: str
    full: frozenset[str]
    short: dict[str, str]  # lower-case short name -> full name
    allowed: str


@dataclass(slots=True)
class _Field:
    name: str
    kind: str  # message|enum|string|bytes|int|float|bool|duration|struct|value|list_value|map
    repeated: bool = False
    message: _Message | None = None
    enum: _Enum | None = None
    bits: int = 32
    signed: bool = True
    oneof: str | None = None
    map_key: _Field | None = None
    map_value: _Field | None = None


@dataclass(slots=True)
class _Message:
    full_name: str
    label: str
    fields: dict[str, _Field] = field(default_factory=dict)
    camel: dict[str, str] = field(default_factory=dict)  # lower-cased camelCase -> snake_case
    oneofs: dict[str, list[str]] = field(default_factory=dict)


_CACHE: dict[str, _Message] = {}
_ENUMS: dict[str, _Enum] = {}
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
_WELL_KNOWN = {
    "google.protobuf.Duration": "duration",
    "google.protobuf.Struct": "struct",
    "google.protobuf.Value": "value",
    "google.protobuf.ListValue": "list_value",
}


def _info(descriptor: Descriptor) -> _Message:
    """Per-message field table, built once: the walk then costs a dict lookup per key."""
    cached = _CACHE.get(descriptor.full_name)
    if cached is not None:
        return cached
    info = _Message(descriptor.full_name, descriptor.name)
    _CACHE[descriptor.full_name] = info  # before the fields: messages may refer to themselves
    for fd in descriptor.fields:
        info.fields[fd.name] = _field_info(fd)
        if fd.json_name != fd.name:
            info.camel[fd.json_name.lower()] = fd.name
    for oneof in descriptor.oneofs:
        if len(oneof.fields) > 1:
            info.oneofs[oneof.name] = [fd.name for fd in oneof.fields]
    return info


def _field_info(fd: FieldDescriptor) -> _Field:
    oneof = fd.containing_oneof.name if fd.containing_oneof is not None else None
    if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        entry = fd.message_type
        return _Field(
            fd.name,
            "map",
            map_key=_field_info(entry.fields_by_name["key"]),
            map_value=_field_info(entry.fields_by_name["value"]),
        )
    result = _Field(fd.name, "", repeated=fd.is_repeated, oneof=oneof)
    if fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        result.kind = _WELL_KNOWN.get(fd.message_type.full_name, "message")
        if result.kind == "message":
            result.message = _info(fd.message_type)
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        result.kind = "enum"
        result.enum = _enum_info(fd.enum_type, fd.name)
    elif fd.type in _INT_TYPES:
        result.kind = "int"
        result.bits, result.signed = _INT_TYPES[fd.type]
    elif fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        result.kind = "float"
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        result.kind = "bool"
    elif fd.type == FieldDescriptor.TYPE_BYTES:
        result.kind = "bytes"
    else:
        result.kind = "string"
    return result


def _enum_info(descriptor: EnumDescriptor, label: str) -> _Enum:
    """Short names drop the prefix that the zero value (`BACKOFF_UNSPECIFIED`) declares."""
    key = f"{descriptor.full_name}:{label}"
    if key in _ENUMS:
        return _ENUMS[key]
    names = [value.name for value in descriptor.values]
    zero = names[0]
    prefix = zero[: -len("UNSPECIFIED")] if zero.endswith("UNSPECIFIED") else ""
    short = {
        name.removeprefix(prefix).lower(): name for name in names if name.startswith(prefix)
    }
    short.pop("unspecified", None)
    _ENUMS[key] = _Enum(label, frozenset(names), short, ", ".join(short))
    return _ENUMS[key]


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    if not _SIMPLE_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


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


def _report_notes(mapping: Mapping[Any, Any], path: str, errors: list[Diagnostic]) -> None:
    for key, message in mapping.notes:  # type: ignore[attr-defined]
        errors.append(Diagnostic(_join(path, str(key)) if key is not None else path, message))


def _walk_message(
    info: _Message, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        errors.append(Diagnostic(path, f"expected a mapping of {info.label} fields, got {_describe(value)}"))
        return {}
    if depth > MAX_DEPTH:
        errors.append(Diagnostic(path, _too_deep("")))
        return {}
    if type(value) is _Noted:
        _report_notes(value, path, errors)
    shorthand = _MESSAGE_SHORTHANDS.get(info.full_name)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            errors.append(Diagnostic(_join(path, str(key)), _non_string_key(key, info)))
            continue
        spec = info.fields.get(key)
        if spec is None:
            errors.append(Diagnostic(_join(path, key), _unknown_field(info, key)))
            continue
        if item is None and spec.kind != "value":
            continue  # protobuf JSON: null means absent
        sub = _join(path, key)
        if shorthand is not None and (fixed := shorthand(spec, item, sub, errors, depth)) is not _NONE:
            out[key] = fixed
        else:
            out[key] = _walk_field(spec, item, sub, errors, depth + 1)
    if info.oneofs:
        _check_oneofs(info, out, path, errors)
    return out


_NONE: Any = object()


def _non_string_key(key: Any, info: _Message) -> str:
    if isinstance(key, (dict, list)):
        return f"{_describe(key)} is used as a key; {_QUOTE_HINT}"
    return f"field names are strings; {_describe(key)} is not a field of {info.label}"


def _unknown_field(info: _Message, key: str) -> str:
    snake = info.camel.get(key.lower())
    if snake is not None and key != snake:
        return f"camelCase field names are not accepted; use snake_case `{snake}`"
    message = f"unknown field `{key}` in {info.label}"
    close = difflib.get_close_matches(key, list(info.fields), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean `{close[0]}`?"
    return message


def _check_oneofs(info: _Message, out: dict[str, Any], path: str, errors: list[Diagnostic]) -> None:
    for name, members in info.oneofs.items():
        present = [member for member in members if member in out]
        if len(present) < 2:
            continue
        listed = " and ".join(f"`{member}`" for member in present)
        if name == "kind":
            thing = "node" if info.label == "Node" else info.label.lower()
            text = f"has {len(present)} kinds, {listed}; a {thing} has exactly one kind"
        else:
            text = f"{listed} are alternatives (one of `{name}`); set only one"
        errors.append(Diagnostic(path, text))


def _walk_field(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if spec.kind == "map":
        return _walk_map(spec, value, path, errors, depth)
    if spec.repeated:
        if not isinstance(value, (list, tuple)):
            hint = f"; write [{value}]" if isinstance(value, (str, int, float)) else ""
            errors.append(Diagnostic(path, f"expected a list, got {_describe(value)}{hint}"))
            return []
        items = []
        for index, item in enumerate(value):
            sub = f"{path}[{index}]"
            if item is None:
                errors.append(Diagnostic(sub, "null is not allowed in a list"))
                continue
            items.append(_walk_single(spec, item, sub, errors, depth))
        return items
    return _walk_single(spec, value, path, errors, depth)


def _walk_map(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if not isinstance(value, Mapping):
        errors.append(Diagnostic(path, f"expected a mapping, got {_describe(value)}"))
        return {}
    if type(value) is _Noted:
        _report_notes(value, path, errors)
    value_spec = spec.map_value
    assert value_spec is not None
    out = {}
    for key, item in value.items():
        text = _map_key(key)
        if text is None:
            errors.append(Diagnostic(path, _bad_map_key(key)))
            continue
        sub = _join(path, text)
        if item is None:
            errors.append(Diagnostic(sub, "null is not allowed as a map value"))
            continue
        out[text] = _walk_single(value_spec, item, sub, errors, depth)
    return out


def _bad_map_key(key: Any) -> str:
    if isinstance(key, (dict, list)):
        return f"{_describe(key)} is used as a key; {_QUOTE_HINT}"
    return f"keys are strings, got {_describe(key)}"


def _map_key(key: Any) -> str | None:
    """Scalar YAML keys (`200:`) become the strings protobuf JSON map keys are."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return None
    if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
        return str(key)
    return None


def _walk_single(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    kind = spec.kind
    if kind == "message":
        assert spec.message is not None
        return _walk_message(spec.message, value, path, errors, depth)
    if kind == "string" or kind == "bytes":
        if isinstance(value, str):
            return value
        errors.append(Diagnostic(path, f"expected a string, got {_describe(value)}"))
        return ""
    handler = _SCALARS[kind]
    return handler(spec, value, path, errors, depth)


def _walk_enum(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    enum = spec.enum
    assert enum is not None
    if isinstance(value, str):
        if value in enum.full:
            return value
        full = enum.short.get(value.lower())
        if full is not None:
            return full
        errors.append(Diagnostic(path, f"unknown {enum.label} {value!r}; expected one of: {enum.allowed}"))
    else:
        errors.append(
            Diagnostic(path, f"expected one of: {enum.allowed}; got {_describe(value)}")
        )
    return None


def _walk_int(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and spec.bits == 64 and _YAML_INT.fullmatch(value):
        number = int(value)  # protobuf JSON writes 64-bit integers as strings
    if number is None:
        errors.append(Diagnostic(path, f"expected an integer, got {_describe(value)}"))
        return 0
    low = -(1 << (spec.bits - 1)) if spec.signed else 0
    high = (1 << (spec.bits - 1 if spec.signed else spec.bits)) - 1
    if not low <= number <= high:
        errors.append(Diagnostic(path, f"{number} is out of range ({low} to {high})"))
    return number


_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _walk_float(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _FLOAT_WORDS:
        return value  # protobuf JSON's spelling of the non-finite doubles
    errors.append(Diagnostic(path, f"expected a number, got {_describe(value)}"))
    return 0


def _walk_bool(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if isinstance(value, bool):
        return value
    errors.append(Diagnostic(path, f"expected true or false, got {_describe(value)}"))
    return False


def _walk_duration(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if isinstance(value, str):
        try:
            return to_proto_json(parse_duration(value))
        except ValueError as exc:
            errors.append(Diagnostic(path, str(exc)))
            return "0s"
    hint = f"; write {value}s" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    errors.append(
        Diagnostic(path, f"expected a duration such as 30s, got {_describe(value)}{hint}")
    )
    return "0s"


def _walk_struct(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if not isinstance(value, Mapping):
        errors.append(Diagnostic(path, f"expected a mapping, got {_describe(value)}"))
        return {}
    return _json_value(value, path, errors, depth)


def _walk_value(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    return _json_value(value, path, errors, depth)


def _walk_list_value(spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    if not isinstance(value, (list, tuple)):
        errors.append(Diagnostic(path, f"expected a list, got {_describe(value)}"))
        return []
    return _json_value(value, path, errors, depth)


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
                errors.append(Diagnostic(path, _bad_map_key(key)))
                continue
            out[text] = _json_value(item, _join(path, text), errors, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{path}[{i}]", errors, depth + 1) for i, item in enumerate(value)]
    errors.append(Diagnostic(path, f"expected a JSON value, got {_describe(value)}"))
    return None


_SCALARS: dict[str, Callable[[_Field, Any, str, list[Diagnostic], int], Any]] = {
    "enum": _walk_enum,
    "int": _walk_int,
    "float": _walk_float,
    "bool": _walk_bool,
    "duration": _walk_duration,
    "struct": _walk_struct,
    "value": _walk_value,
    "list_value": _walk_list_value,
}


# Shorthands ---------------------------------------------------------------------------------


def _machine_state_shorthands(
    spec: _Field, value: Any, path: str, errors: list[Diagnostic], depth: int
) -> Any:
    """The mapping forms of `after` and `on`; _NONE leaves the field to the generic walk."""
    if not isinstance(value, Mapping):
        return _NONE
    if spec.name == "after":
        return _after_shorthand(spec, value, path, errors, depth)
    if spec.name == "on":
        return _on_shorthand(value, path, errors, depth)
    if spec.name == "invoke" and "workflow" in value:
        return _invoke_shorthand(spec, value, path, errors, depth)
    return _NONE


def _invoke_shorthand(
    spec: _Field, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> dict[str, Any]:
    """FORMAT.md's state machine writes `invoke: {workflow: fulfil}`: "invoke workflow fulfil"
    reads better than `name:` there, so `workflow` is accepted as the child workflow's name."""
    assert spec.message is not None
    if "name" in value:
        errors.append(Diagnostic(_join(path, "workflow"), "give the workflow as `name` or `workflow`, not both"))
        return {}
    body = {("name" if key == "workflow" else key): item for key, item in value.items()}
    return _walk_message(spec.message, body, path, errors, depth + 1)


def _after_shorthand(
    spec: _Field, value: Mapping[Any, Any], path: str, errors: list[Diagnostic], depth: int
) -> list[dict[str, Any]]:
    """`after: {30m: {target: x}}` (or `{30m: x}`) is `after: [{delay: 1800s, target: x}]`."""
    if type(value) is _Noted:
        _report_notes(value, path, errors)
    assert spec.message is not None
    timers = []
    for key, item in value.items():
        delay = _map_key(key)
        if delay is None:
            errors.append(Diagnostic(path, f"`after` keys are durations such as 30m, got {_describe(key)}"))
            continue
        sub = _join(path, delay)
        body = {"target": item} if isinstance(item, str) else item
        if isinstance(body, Mapping) and "delay" in body:
            errors.append(Diagnostic(_join(sub, "delay"), "the key gives the delay already; remove `delay`"))
            continue
        timer = _walk_message(spec.message, body, sub, errors, depth + 1)
        try:
            timer["delay"] = to_proto_json(parse_duration(delay))
        except ValueError as exc:
            errors.append(Diagnostic(sub, str(exc)))
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
        sub = _join(path, event)
        if item is None:
            errors.append(Diagnostic(sub, "expected a transition, got null"))
            continue
        out[event] = _walk_transitions(item, sub, errors, depth + 1)
    return out


def _walk_transitions(value: Any, path: str, errors: list[Diagnostic], depth: int) -> Any:
    """`on: {E: target}`, `on: {E: {target: x}}` and `on: {E: [{guard, target}, ...]}` are all
    `on: {E: {transitions: [...]}}`, the full form, which is accepted too."""
    info = _info(WorkflowSpec.DESCRIPTOR.file.message_types_by_name["Transitions"])
    transitions = info.fields["transitions"]
    if isinstance(value, str):
        value = [{"target": value}]
    if isinstance(value, Mapping) and "transitions" not in value:
        assert transitions.message is not None
        return {"transitions": [_walk_message(transitions.message, value, path, errors, depth + 1)]}
    if isinstance(value, (list, tuple)):
        return {"transitions": _walk_field(transitions, value, path, errors, depth + 1)}
    return _walk_message(info, value, path, errors, depth)


_MESSAGE_SHORTHANDS: dict[str, Callable[[_Field, Any, str, list[Diagnostic], int], Any]] = {
    "agentrun.v1.MachineState": _machine_state_shorthands,
}
