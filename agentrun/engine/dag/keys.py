"""Task keys: which call of an execution a record, a timer, a slot or an outcome belongs to.

A key is a typed value (node, map index, role). Its text form is what the store, the events
and the tools have always seen, byte for byte: `NODE` (the node's own attempt), `NODE[3]`
(map item 3), `NODE.fallback` (a fallback handler's step), `NODE.compensate` (its undo in a
saga). It is produced by `str(key)` and read back by `TaskKey.parse`, at the edge only; inside
the interpreter nothing looks for `[` or a suffix. Node ids are `[a-z][a-z0-9_]*`
(compiler.NODE_ID_RE), so the text form cannot be ambiguous.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field


class Role(enum.Enum):
    """What a call does for its node."""

    MAIN = "main"  # the node's own attempt, or one map item's (with an index)
    FALLBACK = "fallback"  # a `fallback` handler's step, run in the node's place
    COMPENSATE = "compensate"  # the node's undo, while the execution compensates


_SUFFIXES = (".compensate", ".fallback")
# Read on every call, as module constants: on Python 3.11 a member read through its class
# (`Role.MAIN`) goes through `EnumType.__getattr__`, ~0.2 us.
_MAIN, _COMPENSATE = Role.MAIN, Role.COMPENSATE


@dataclass(frozen=True, slots=True, eq=False)
class TaskKey:
    node: str
    index: int | None = None
    role: Role = Role.MAIN
    # The stored text form, computed once (records, events, scheduler owners use it). It
    # names the key exactly, so it is also what keys compare and hash by (a key is hashed
    # on every launch and outcome: one string hash, not a tuple's with an enum's).
    text: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        text = self.node if self.index is None else f"{self.node}[{self.index}]"
        if self.role is not _MAIN:
            text = f"{text}.{self.role.value}"
        object.__setattr__(self, "text", text)

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, TaskKey) and self.text == other.text)

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def is_node(self) -> bool:
        """The node's own attempt (its record is the node's row)."""
        return self.index is None and self.role is _MAIN

    @property
    def is_item(self) -> bool:
        return self.index is not None

    def idempotency_key(self, execution_id: str) -> str:
        """What a tool sees as `CallContext.idempotency_key`: `EXEC/NODE`, `EXEC/NODE/INDEX`
        for a map item, `EXEC/NODE/compensate` for an undo (a fallback shares its node's)."""
        key = f"{execution_id}/{self.node}"
        if self.index is not None:
            key += f"/{self.index}"
        if self.role is _COMPENSATE:
            key += "/compensate"
        return key

    @staticmethod
    @functools.lru_cache(maxsize=8192)
    def of(node: str) -> TaskKey:
        """The key of a node's own attempt; one value per node id, made once (a key is made
        for every attempt, and a frozen dataclass is not free to build)."""
        return TaskKey(node)

    @classmethod
    def parse(cls, text: str) -> TaskKey:
        """The key of a stored node row's id."""
        if "[" in text:
            node, index = text.split("[", 1)
            return cls(node, int(index[:-1]))
        for suffix in _SUFFIXES:
            if text.endswith(suffix):
                return cls(text[: -len(suffix)], role=Role(suffix[1:]))
        return cls.of(text)
