"""The SDK's enums take their values from the protobuf enums (the API), not from copies.

A member is declared once, by the proto constant it stands for (`SUCCEEDED =
label(Execution.State, Execution.STATE_SUCCEEDED)`), so a renamed or removed proto value fails
at import, and its value is the proto name less the enum's prefix (`"SUCCEEDED"`), what the
CLI prints and filters take. tests/client/test_enums.py checks that every proto value has its
member.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

E = TypeVar("E", bound=enum.StrEnum)


def label(enum_type: EnumTypeWrapper, number: int) -> str:
    """A proto enum value's name less the enum's prefix: `STATE_TIMED_OUT` -> `TIMED_OUT`,
    `KIND_NO_TRANSITION` -> `NO_TRANSITION`."""
    return enum_type.Name(number).partition("_")[2]


def from_proto(sdk_enum: type[E], enum_type: EnumTypeWrapper, number: int) -> E:
    """The member for a proto enum number; UNSPECIFIED for one this SDK does not know (a
    newer server's)."""
    try:
        return sdk_enum(label(enum_type, number))
    except ValueError:
        return sdk_enum("UNSPECIFIED")
