import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun.engine.durations import (
    MAX_SECONDS,
    format_duration,
    parse_duration,
    to_proto_json,
    to_seconds_nanos,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1h30m", 5400),
        ("1d2h3m4s5ms", 93784.005),
        ("0s", 0),
        ("0.500s", 0.5),  # protobuf JSON text reads back
        ("1800s", 1800),
        ("1.000000001s", 1.000000001),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "empty duration"),
        ("-5s", "negative"),
        ("30", "no unit"),
        ("1.5", "no unit"),
        ("5y", "invalid duration"),
        ("5 s", "invalid duration"),
        ("s", "invalid duration"),
        ("1h 30m", "invalid duration"),
        ("30m1h", "largest to smallest"),
        ("1m1m", "largest to smallest"),
        ("1.2.3s", "invalid duration"),
        ("400000000000s", "too long"),
    ],
)
def test_parse_duration_refuses(text: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        parse_duration(text)


def test_parse_duration_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="a duration is a string"):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1.5, "1.5s"),
        (30, "30s"),
        (90, "1m30s"),
        (90.5, "1m30.5s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (0.0005, "0.0005s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), MAX_SECONDS + 1, True, "5s"])
def test_format_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "0.500s"),
        (1800, "1800s"),
        (1.5, "1.500s"),
        (0.000001, "0.000001s"),
        (1.000000001, "1.000000001s"),
        (0.0000000004, "0s"),  # below a nanosecond rounds away
    ],
)
def test_to_proto_json(seconds: float, text: str) -> None:
    assert to_proto_json(seconds) == text


def test_to_seconds_nanos_is_exact_for_large_values() -> None:
    assert to_seconds_nanos(315_000_000_000.125) == (315_000_000_000, 125_000_000)


# No per-example deadline: on a loaded machine one example can take longer than 200 ms.
@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_SECONDS * 1000).map(lambda ms: ms / 1000))
def test_format_then_parse_is_identity_at_millisecond_granularity(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# No per-example deadline: on a loaded machine one example can take longer than 200 ms.
@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**12).map(lambda ms: ms / 1000))
def test_proto_json_reads_back(seconds: float) -> None:
    assert parse_duration(to_proto_json(seconds)) == seconds
