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
from collections.abc import Callable
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
    Value, a NUL character in a Value) is given to the printer, which says the same as before."""
    return cast(dict[str, Any], _message_json(message))


class Checks:
    """Values `checked_dict` refuses beyond those the tables cannot convert (unknown enum
    numbers, NaN and the infinities, float32 fields, extensions), which it refuses too: NUL
    characters in any string, strings longer than `string_limit(field)` (None: any length),
    and messages of a `google.protobuf` type other than Struct, Value and ListValue unless
    `well_known(full name)` gives a test they pass. The rules are fixed per instance (their
    per-type tables are kept on it)."""

    def __init__(
        self,
        string_limit: Callable[[FieldDescriptor], int | None],
        well_known: Callable[[str], Callable[[Any], bool] | None],
    ) -> None:
        self.string_limit = string_limit
        self.well_known = well_known
        self.tables: dict[Descriptor, dict[FieldDescriptor, _Entry] | None] = {}


def checked_dict(message: Message, checks: Checks) -> dict[str, Any] | None:
    """`to_dict(message)` when every value in it passes `checks`, else None (nothing says
    which: the caller's own walk does). One walk for both, as registration needs both: the
    stored form, and the knowledge that no field holds a value the compiler cannot trust."""
    table = _field_table(descriptor(message), checks)
    if table is None:
        return None
    try:
        return _regular(message, table, checks)
    except _Unusual:
        return None


# How a field's value becomes JSON (see _field_table); _STRING only in checked tables.
_PLAIN, _DOUBLE, _INT64, _ENUM, _MESSAGE, _STRUCT, _VALUE, _LIST_VALUE, _WKT, _STRING = range(10)
_JSON_TYPES = {
    "google.protobuf.Struct": _STRUCT,
    "google.protobuf.Value": _VALUE,
    "google.protobuf.ListValue": _LIST_VALUE,
}
# (file word, how, map entry or repeated or single, extra, map key limit): extra is the names
# of an enum's numbers, a string's length limit or a well-known type's test (checked tables).
_Entry = tuple[str, int, str, Any, int | None]
_TABLES: dict[Descriptor, dict[FieldDescriptor, _Entry] | None] = {}


def _field_table(
    desc: Descriptor, checks: Checks | None = None
) -> dict[FieldDescriptor, _Entry] | None:
    """Per field of `desc`, how `_regular` converts it (and with `checks`, checks it); None:
    the printer converts the whole message (a field type the table does not cover), and
    `checked_dict` answers None."""
    tables = _TABLES if checks is None else checks.tables
    if desc in tables:
        return tables[desc]
    table: dict[FieldDescriptor, _Entry] | None = {}
    for fd in desc.fields:
        shape = "one"
        value_fd = fd
        key_limit = None
        entry = fd.message_type
        if entry is not None and entry.GetOptions().map_entry:
            shape = "map"
            value_fd = entry.fields_by_name["value"]
            if checks is not None:
                key_limit = checks.string_limit(entry.fields_by_name["key"])
        elif fd.is_repeated:
            shape = "list"
        how, extra = _how(value_fd, checks)
        if how is None or table is None:
            table = None
            continue
        table[fd] = (word(fd), how, shape, extra, key_limit)
    tables[desc] = table
    return table


def _how(fd: FieldDescriptor, checks: Checks | None) -> tuple[int | None, Any]:
    kind, message, enum = fd.type, fd.message_type, fd.enum_type
    if message is not None:
        full_name = message.full_name
        if full_name in _JSON_TYPES:
            return _JSON_TYPES[full_name], None
        if not full_name.startswith("google.protobuf."):
            return _MESSAGE, None
        if checks is None:
            return _WKT, None
        test = checks.well_known(full_name)
        return (None, None) if test is None else (_WKT, test)
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
    if kind == FieldDescriptor.TYPE_STRING and checks is not None:
        return _STRING, checks.string_limit(fd)
    return _PLAIN, None  # string, bool, 32-bit ints


_UNKNOWN: Any = object()  # a type `_field_table` has not seen


class _Unusual(Exception):
    """A value the tables do not cover: the enclosing message goes to the printer (or, when
    checking, fails the checks)."""


def _message_json(message: Message) -> Any:
    desc = descriptor(message)
    table = _field_table(desc)
    if table is not None:
        try:
            return _regular(message, table, None)
        except _Unusual:
            pass
    data: Any = json_format.MessageToDict(message, preserving_proto_field_name=True)
    if isinstance(data, dict):
        _rename(desc, data)
    return data


def _regular(
    message: Message, table: dict[FieldDescriptor, _Entry], checks: Checks | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        entry = table.get(fd)
        if entry is None:
            raise _Unusual  # an extension
        key, how, shape, extra, key_limit = entry
        if shape == "one":
            if how == _PLAIN:
                out[key] = value
            elif how == _STRING:
                if "\x00" in value or (extra is not None and len(value) > extra):
                    raise _Unusual
                out[key] = value
            elif how == _MESSAGE and checks is not None:  # `_value`'s, one call less
                sub = checks.tables.get(value.DESCRIPTOR, _UNKNOWN)
                if sub is _UNKNOWN:
                    sub = _field_table(value.DESCRIPTOR, checks)
                if sub is None:
                    raise _Unusual
                out[key] = _regular(value, sub, checks)
            elif how == _VALUE:
                out[key] = _json_value(value)
            else:
                out[key] = _value(how, extra, value, checks)
        elif shape == "list":
            # A slice is a list built in C (list() iterates, ~3x the cost); each read of a
            # repeated string makes a new str, so it is read once.
            if how == _PLAIN:
                out[key] = value[:]
            elif how == _STRING:
                items = value[:]
                for item in items:
                    if "\x00" in item or (extra is not None and len(item) > extra):
                        raise _Unusual
                out[key] = items
            elif how == _MESSAGE and checks is not None:  # `_value`'s, one call less each
                sub = _field_table(value[0].DESCRIPTOR, checks)  # (ListFields: not empty)
                if sub is None:
                    raise _Unusual
                out[key] = [_regular(item, sub, checks) for item in value]
            else:
                out[key] = [_value(how, extra, item, checks) for item in value]
        else:
            if checks is not None:
                for k in value:
                    if isinstance(k, str) and (
                        "\x00" in k or (key_limit is not None and len(k) > key_limit)
                    ):
                        raise _Unusual
            out[key] = {
                ("true" if k else "false") if isinstance(k, bool) else str(k): _value(
                    how, extra, value[k], checks
                )
                for k in value
            }
    return out


def _value(how: int, extra: Any, value: Any, checks: Checks | None) -> Any:
    if how == _PLAIN:
        return value
    if how == _DOUBLE:
        if not math.isfinite(value):
            raise _Unusual
        return value
    if how == _MESSAGE:
        desc = value.DESCRIPTOR
        if checks is not None:
            table = _field_table(desc, checks)
            if table is None:
                raise _Unusual
            return _regular(value, table, checks)
        table = _TABLES.get(desc)
        if table is not None:
            try:
                return _regular(value, table, None)
            except _Unusual:
                pass
        return _message_json(value)
    if how == _VALUE:
        return _json_value(value)
    if how == _STRUCT:
        return _json_struct(value)
    if how == _LIST_VALUE:
        return [_json_value(v) for v in value.values]
    if how == _ENUM:
        name = extra.get(value) if extra is not None else None
        if name is None:
            raise _Unusual
        return name
    if how == _INT64:
        return str(value)
    if how == _STRING:
        if "\x00" in value or (extra is not None and len(value) > extra):
            raise _Unusual
        return value
    if extra is not None and not extra(value):  # _WKT, checked
        raise _Unusual
    return json_format.MessageToDict(value, preserving_proto_field_name=True)  # _WKT


def _json_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        if "\x00" in text:
            raise _Unusual  # refused when checking; the printer's when not
        return text
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _Unusual  # the printer refuses it
        return number
    if kind == "struct_value":
        return _json_struct(value.struct_value)
    if kind == "list_value":
        return [_json_value(v) for v in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or nothing set


def _json_struct(struct: Any) -> dict[str, Any]:
    out = {}
    for k, v in struct.fields.items():
        if "\x00" in k:
            raise _Unusual  # refused when checking; the printer's when not
        out[k] = _json_value(v)
    return out


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
