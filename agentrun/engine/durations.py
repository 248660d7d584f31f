"""Human durations (`500ms`, `1h30m`) for workflow files, and protobuf JSON duration text.

Arithmetic is done on exact decimals, never on binary floats, so that
`parse_duration(format_duration(x)) == x` holds for every millisecond-granular `x` and a
duration read from a file reaches protobuf without rounding noise.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = ["MAX_SECONDS", "format_duration", "parse_duration", "to_proto_json", "to_seconds_nanos"]

# google.protobuf.Duration's range: +-10,000 years.
MAX_SECONDS = 315_576_000_000

_UNITS: dict[str, Decimal] = {
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_ORDER = list(_UNITS)  # largest first
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|d|h|m|s)")
_NANO = Decimal("0.000000001")
_HINT = "write a number with a unit: 500ms, 30s, 5m, 2h, 1d, or a combination such as 1h30m"


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError saying what is wrong and what is accepted."""
    return float(_parse_exact(text))


def _parse_exact(text: str) -> Decimal:
    if not isinstance(text, str):
        raise ValueError(f"a duration is a string such as 30s, got {type(text).__name__}")
    if not text:
        raise ValueError(f"empty duration; {_HINT}")
    if text.startswith("-"):
        raise ValueError(f"duration {text!r} is negative; durations must be zero or more")
    if _is_number(text):
        raise ValueError(f"duration {text!r} has no unit; {_HINT}")
    total = Decimal(0)
    position = 0
    last_unit = -1
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        number, unit = match.groups()
        rank = _ORDER.index(unit)
        if rank <= last_unit:
            raise ValueError(
                f"duration {text!r}: units must go from largest to smallest, each once (1h30m)"
            )
        last_unit = rank
        total += Decimal(number) * _UNITS[unit]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(f"invalid duration {text!r}; {_HINT}")
    if total > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is too long (at most {MAX_SECONDS} seconds)")
    return total


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


def format_duration(seconds: float) -> str:
    """The shortest human form (`1m30s`, `500ms`, `1.5s`): what the CLI and messages show."""
    exact = _exact(seconds)
    if exact == 0:
        return "0s"
    parts: list[str] = []
    rest = exact
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        count = int(rest // size)
        if count:
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest:
        if rest < 1 and (rest * 1000) == (rest * 1000).to_integral_value():
            parts.append(f"{int(rest * 1000)}ms")
        else:
            parts.append(f"{_plain(rest)}s")
    return "".join(parts)


def to_seconds_nanos(seconds: float) -> tuple[int, int]:
    """The (seconds, nanos) of a google.protobuf.Duration, rounded to nanoseconds exactly."""
    exact = _exact(seconds).quantize(_NANO, rounding=ROUND_HALF_EVEN)
    whole = int(exact)
    return whole, int((exact - whole) * 1_000_000_000)


def to_proto_json(seconds: float) -> str:
    """Protobuf JSON duration text (`"0.500s"`), rounded to nanoseconds as protobuf stores it."""
    whole, nanos = to_seconds_nanos(seconds)
    if nanos == 0:
        return f"{whole}s"
    if nanos % 1_000_000 == 0:
        return f"{whole}.{nanos // 1_000_000:03d}s"
    if nanos % 1_000 == 0:
        return f"{whole}.{nanos // 1_000:06d}s"
    return f"{whole}.{nanos:09d}s"


def _exact(seconds: float) -> Decimal:
    """The decimal a float was written as: repr() is the shortest text that reads back the same."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Decimal)):
        raise ValueError(f"seconds must be a number, got {type(seconds).__name__}")
    exact = seconds if isinstance(seconds, Decimal) else Decimal(repr(seconds))
    if not exact.is_finite():
        raise ValueError(f"seconds must be finite, got {seconds!r}")
    if exact < 0:
        raise ValueError(f"seconds must not be negative, got {seconds!r}")
    if exact > MAX_SECONDS:
        raise ValueError(f"{seconds!r} seconds is too long (at most {MAX_SECONDS})")
    return exact


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
