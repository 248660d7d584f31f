"""The words workflow files use for proto fields.

A proto field whose file word is a keyword in a common language (`pass`, `from`, `switch`,
`default`, `goto`, `final`, `export`) is named so that generated code in every language can
spell it (`pass_node`, `from_node`, ...) and keeps the word as its `json_name`. Every other
field's word is its proto name (snake_case). Files, stored specs, error paths and the SDK's
`Workflow.spec` dicts use the words; code that touches messages uses the proto names. This
module is the one place that maps between the two, from the descriptors alone.
"""

from __future__ import annotations

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
    return word(descriptor(message).fields_by_name[name])


def member(message: Message, oneof: str = "kind") -> Any:
    """The message set in `oneof` (a `PassNode` for a pass node), or None."""
    name = message.WhichOneof(oneof)
    return None if name is None else getattr(message, name)


def to_dict(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping with file words as keys: snake_case proto names, except the
    renamed fields, which appear under their words (`pass`, not `pass_node`)."""
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _rename(descriptor(message), data)
    return data


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
