"""Workflow text (YAML or JSON) to plain values, refusing what must not be read at all.

The first half of the loader's first pass (agentrun/engine/loader.py): `read_document` decodes
the text (UTF-8, at most MAX_BYTES) and parses it; agentrun/engine/spec_walk.py then walks the
plain values against the message descriptors. Problems after which the text cannot be read
further (syntax, aliases, depth, size) raise `Refused`; duplicate keys and mappings used as
keys travel to the walk on the mapping (`Noted`), which reports them with their field path.

YAML is read from parser events rather than through PyYAML's constructor: that is where anchors
and aliases can be refused before anything is built (a billion-laughs document fails at its first
anchor), where depth is bounded without recursion, and where YAML 1.2 core scalars are resolved
(`on`, `yes`, `off` stay strings; no sexagesimal numbers, no timestamps).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "QUOTE_HINT", "Noted", "Refused", "read_document", "too_deep"]


class _PyEventParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python event parser, for builds without libyaml."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


try:  # libyaml when present: the same events, several times faster
    from yaml._yaml import CParser as _EventParser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _EventParser = _PyEventParser  # type: ignore[assignment,misc]


MAX_BYTES = 1 << 20
MAX_DEPTH = 64
QUOTE_HINT = "quote strings that hold ${{ }}"


class Refused(Exception):
    """A problem after which the text cannot be read further (syntax, aliases, depth, size)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_document(text: str | bytes, filename: str = "") -> Any:
    """The plain values of a workflow file: JSON when the name says so or the text starts with
    `{`, else YAML. Raises Refused."""
    decoded = _decode(text)
    is_json = filename.lower().endswith(".json") or decoded.lstrip().startswith("{")
    return _parse_json(decoded) if is_json else _parse_yaml(decoded)


def _decode(text: str | bytes) -> str:
    if isinstance(text, str):
        if len(text) > MAX_BYTES:
            raise Refused(_too_large(len(text)))
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise Refused(f"invalid character at offset {exc.start} (a lone surrogate)") from None
        if size > MAX_BYTES:
            raise Refused(_too_large(size))
        return text.removeprefix("\ufeff")
    if not isinstance(text, (bytes, bytearray, memoryview)):
        raise Refused(f"a workflow is text or bytes, got {type(text).__name__}")
    if len(text) > MAX_BYTES:
        raise Refused(_too_large(len(text)))
    try:
        return bytes(text).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = bytes(text)[exc.start]
        raise Refused(f"not valid UTF-8: byte 0x{bad:02x} at offset {exc.start}") from None


def _too_large(size: int) -> str:
    return f"the document is {size} bytes; the limit is {MAX_BYTES} bytes (1 MiB)"


class Noted(dict):  # type: ignore[type-arg]
    """A mapping that carries reading problems (duplicate keys, mappings used as keys) to the
    walker, which reports them with the mapping's field path."""

    notes: list[tuple[Any, str]]


def _noted(mapping: dict[Any, Any], notes: list[tuple[Any, str]]) -> Noted:
    result = Noted(mapping)
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
        raise Refused(f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise Refused(too_deep("")) from None
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
        raise Refused(message) from None


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
    raise Refused(f"invalid JSON: {name} is not a JSON value")


def too_deep(where: str) -> str:
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


# The Python types a `!!int`, `!!float`, `!!bool`, `!!null` tag accepts.
_TAGGED: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "null": type(None),
}


def _resolve_scalar(event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag == "!":
        return event.value
    if tag == _TAG + "str":
        return event.value
    if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
        value = _resolve_plain(event.value)
        kind = tag.removeprefix(_TAG)
        typed = isinstance(value, _TAGGED[kind]) and not (
            kind != "bool" and isinstance(value, bool)
        )
        if typed:
            return float(value) if kind == "float" else value
        raise Refused(f"{_mark(event)}: {event.value!r} is not a valid !!{kind}")
    raise Refused(f"{_mark(event)}: YAML tag {tag} is not supported")


def _mark(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _parse_yaml(text: str) -> Any:
    try:
        return _build_from_events(_EventParser(text))
    except yaml.MarkedYAMLError as exc:
        raise Refused(_yaml_syntax_message(exc, text)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        character = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise Refused(
            f"YAML syntax error at line {line}, column {column}: {exc.reason} (#x{character:04x})"
        ) from None
    except yaml.YAMLError as exc:
        raise Refused(f"invalid YAML: {exc}") from None


def _yaml_syntax_message(exc: yaml.MarkedYAMLError, text: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    if "nesting depth" in problem:
        return too_deep(f" at line {mark.line + 1}" if mark else "")
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    message = f"YAML syntax error{where}: {problem}"
    if exc.context and exc.problem:
        message += f" ({exc.context})"
    lines = text.splitlines()
    if mark and mark.line < len(lines) and "${{" in lines[mark.line]:
        message += f"; {QUOTE_HINT}"
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
                raise Refused(_anchor_message(event))
            if event.tag is not None:
                value: Any = _resolve_scalar(event)
            elif event.implicit[0]:
                value = _resolve_plain(event.value)
            else:
                value = event.value
        elif kind is mapping_start or kind is sequence_start:
            if event.anchor is not None:
                raise Refused(_anchor_message(event))
            if event.tag is not None and event.tag not in ("!", _TAG + "map", _TAG + "seq"):
                raise Refused(f"{_mark(event)}: YAML tag {event.tag} is not supported")
            if len(stack) >= MAX_DEPTH:
                raise Refused(too_deep(f" at line {event.start_mark.line + 1}"))
            is_mapping = kind is mapping_start
            stack.append([{} if is_mapping else [], is_mapping, _NO_KEY, None, None, event])
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            value = _noted(frame[0], frame[4]) if frame[4] else frame[0]
            event = frame[5]  # where the container started: what a key error should name
        elif kind is yaml.AliasEvent:
            raise Refused(
                f"{_mark(event)}: YAML aliases (*{event.anchor}) are not allowed; "
                "write the value out"
            )
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise Refused(
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
        _note(frame, None, f"{shape} is used as a key at {_mark(key_event)}; {QUOTE_HINT}")
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
