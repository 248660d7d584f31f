"""The words workflow files use for proto fields.

A proto field whose file word is a keyword in a common language (`pass`, `from`, `switch`,
`default`, `goto`, `final`, `export`) is named so that generated code in every language can
spell it (`pass_node`, `from_node`, ...) and keeps the word as its `json_name`. Every other
field's word is its proto name (snake_case). Files, stored specs, error paths and the SDK's
`Workflow.spec` dicts use the words; code that touches messages uses the proto names. This
module is the one place that maps between the two, from the descriptors alone.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message


def default_json_name(name: str) -> str:
    """protoc's lowerCamelCase of a proto name, what `json_name` is when a file does not set it."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# Words by descriptor: the compiler and the value checks ask for every field of every node.
_WORDS: dict[FieldDescriptor, str] = {}


def word(fd: FieldDescriptor) -> str:
    """The file word of a field: its explicit `json_name`, else its proto name."""
    known = _WORDS.get(fd)
    if known is None:
        json_name: str = fd.json_name
        known = _WORDS[fd] = json_name if json_name != default_json_name(fd.name) else fd.name
    return known


def descriptor(message: Message | type[Message]) -> Descriptor:
    """A message's (or message class's) descriptor, typed as the stubs' `Descriptor` (the
    upb build's own descriptor type is listed beside it, with the same interface)."""
    return cast(Descriptor, message.DESCRIPTOR)


def which(message: Message, oneof: str = "kind") -> str | None:
    """The file word of the member of `oneof` that is set (`"pass"` for `pass_node`), or None."""
    name = message.WhichOneof(oneof)
    if name is None:
        return None
    key = (message.DESCRIPTOR.full_name, name)
    known = _WHICH.get(key)
    if known is None:
        known = _WHICH[key] = word(descriptor(message).fields_by_name[name])
    return known


# (message type, set member's proto name) -> its word: the compiler asks twice per node.
_WHICH: dict[tuple[str, str], str] = {}


def member(message: Message, oneof: str = "kind") -> Any:
    """The message set in `oneof` (a `PassNode` for a pass node), or None."""
    name = message.WhichOneof(oneof)
    return None if name is None else getattr(message, name)


def to_dict(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping with file words as keys: snake_case proto names, except the
    renamed fields, which appear under their words (`pass`, not `pass_node`).

    The same dict, key order included, as `json_format.MessageToDict(preserving_proto_field_name=
    True)` renamed by `_rename`, built in one walk from per-type tables: a 10,000-node spec is
    stored at registration, and the generic printer took ~20 µs a node. A message the tables
    do not cover (an extension, an enum number its type does not name, a float32, NaN in a
    Value) is given to the printer, which says the same as before."""
    return cast(dict[str, Any], _message_json(message))


# How a field's value becomes JSON (see _field_table).
_PLAIN, _DOUBLE, _INT64, _ENUM, _MESSAGE, _STRUCT, _VALUE, _LIST_VALUE, _WKT = range(9)
_JSON_TYPES = {
    "google.protobuf.Struct": _STRUCT,
    "google.protobuf.Value": _VALUE,
    "google.protobuf.ListValue": _LIST_VALUE,
}
# (file word, how, map entry or repeated or single, names of an enum's numbers)
_Entry = tuple[str, int, str, dict[int, str] | None]
_TABLES: dict[Descriptor, dict[FieldDescriptor, _Entry] | None] = {}


def _field_table(desc: Descriptor) -> dict[FieldDescriptor, _Entry] | None:
    """Per field of `desc`, how `_message_json` converts it; None: the printer converts the
    whole message (a field type the table does not cover)."""
    if desc in _TABLES:
        return _TABLES[desc]
    table: dict[FieldDescriptor, _Entry] | None = {}
    for fd in desc.fields:
        shape = "one"
        value_fd = fd
        entry = fd.message_type
        if entry is not None and entry.GetOptions().map_entry:
            shape = "map"
            value_fd = entry.fields_by_name["value"]
        elif fd.is_repeated:
            shape = "list"
        how, names = _how(value_fd)
        if how is None or table is None:
            table = None
            continue
        table[fd] = (word(fd), how, shape, names)
    _TABLES[desc] = table
    return table


def _how(fd: FieldDescriptor) -> tuple[int | None, dict[int, str] | None]:
    kind, message, enum = fd.type, fd.message_type, fd.enum_type
    if message is not None:
        full_name = message.full_name
        if full_name in _JSON_TYPES:
            return _JSON_TYPES[full_name], None
        return (_WKT if full_name.startswith("google.protobuf.") else _MESSAGE), None
    if enum is not None:
        values = enum.values
        if any(v.GetOptions().ListFields() for v in values):
            return None, None  # a JSON name option: the printer knows it
        return _ENUM, {v.number: v.name for v in values}
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _INT64, None
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_BYTES):
        return None, None
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _DOUBLE, None  # finite (NaN and the infinities: the printer's strings)
    return _PLAIN, None  # string, bool, 32-bit ints


class _Unusual(Exception):
    """A value the tables do not cover: the enclosing message goes to the printer."""


def _message_json(message: Message) -> Any:
    desc = descriptor(message)
    table = _field_table(desc)
    if table is not None:
        try:
            return _regular(message, table)
        except _Unusual:
            pass
    data: Any = json_format.MessageToDict(message, preserving_proto_field_name=True)
    if isinstance(data, dict):
        _rename(desc, data)
    return data


def _regular(message: Message, table: dict[FieldDescriptor, _Entry]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        entry = table.get(fd)
        if entry is None:
            raise _Unusual  # an extension
        key, how, shape, names = entry
        if shape == "one":
            if how == _PLAIN:
                out[key] = value
            elif how == _VALUE:
                out[key] = _json_value(value)
            else:
                out[key] = _value(how, names, value)
        elif shape == "list":
            if how == _PLAIN:
                out[key] = list(value)
            else:
                out[key] = [_value(how, names, item) for item in value]
        else:
            out[key] = {
                ("true" if k else "false") if isinstance(k, bool) else str(k): _value(
                    how, names, value[k]
                )
                for k in value
            }
    return out


def _value(how: int, names: dict[int, str] | None, value: Any) -> Any:
    if how == _PLAIN:
        return value
    if how == _DOUBLE:
        if not math.isfinite(value):
            raise _Unusual
        return value
    if how == _MESSAGE:
        table = _TABLES.get(value.DESCRIPTOR)
        if table is not None:
            try:
                return _regular(value, table)
            except _Unusual:
                pass
        return _message_json(value)
    if how == _VALUE:
        return _json_value(value)
    if how == _STRUCT:
        return {k: _json_value(v) for k, v in value.fields.items()}
    if how == _LIST_VALUE:
        return [_json_value(v) for v in value.values]
    if how == _ENUM:
        name = names.get(value) if names is not None else None
        if name is None:
            raise _Unusual
        return name
    if how == _INT64:
        return str(value)
    return json_format.MessageToDict(value, preserving_proto_field_name=True)  # _WKT


def _json_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _Unusual  # the printer refuses it
        return number
    if kind == "struct_value":
        return {k: _json_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_json_value(v) for v in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or nothing set


@cache
def _renames(descriptor: Descriptor) -> tuple[tuple[str, str, Descriptor | None, str], ...]:
    """(proto name, word, message type to descend into, shape) for the fields of `descriptor`
    under which a renamed field can occur; shape is "one", "list" or "map"."""
    out = []
    for fd in descriptor.fields:
        target = fd.message_type
        shape = "one"
        if target is not None and target.GetOptions().map_entry:
            target = target.fields_by_name["value"].message_type
            shape = "map"
        elif fd.is_repeated:
            shape = "list"
        if target is not None and (
            target.full_name.startswith("google.protobuf.") or not _reaches_rename(target)
        ):
            target = None
        if word(fd) != fd.name or target is not None:
            out.append((fd.name, word(fd), target, shape))
    return tuple(out)


@cache
def _reaches_rename(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    if descriptor.full_name in _seen:
        return False
    seen = _seen | {descriptor.full_name}
    for fd in descriptor.fields:
        if word(fd) != fd.name:
            return True
        target = fd.message_type
        if target is not None and not target.full_name.startswith("google.protobuf."):
            if _reaches_rename(target, seen):
                return True
    return False


def _rename(descriptor: Descriptor, data: dict[str, Any]) -> None:
    """In place, keeping the keys' order (a printed spec reads in field order)."""
    renamed = False
    for name, file_word, target, shape in _renames(descriptor):
        value = data.get(name)
        if value is None:
            continue
        renamed = renamed or name != file_word
        if target is None:
            continue
        items = value if shape == "list" else value.values() if shape == "map" else [value]
        for item in items:
            _rename(target, item)
    if renamed:
        words = {name: file_word for name, file_word, _, _ in _renames(descriptor)}
        items = [(words.get(key, key), value) for key, value in data.items()]
        data.clear()
        data.update(items)
