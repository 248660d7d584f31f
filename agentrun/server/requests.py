"""Parsing of request fields: resource names, page sizes and tokens (AIP-158), filters."""

from __future__ import annotations

import base64
import functools
import json
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agentrun.engine.errors import clip
from agentrun.server.errors import invalid_argument
from agentrun.storage.records import ExecutionState
from agentrun.v1 import execution_service_pb2 as pb

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# A node id, or `ID[INDEX]` for a map item.
_NODE_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}(\[[0-9]{1,9}\])?")


def workflow_name(value: str, field: str = "name") -> str:
    """`workflows/{name}` or a bare name -> the name."""
    name = value.removeprefix("workflows/")
    if not name:
        raise invalid_argument(field, "required: `workflows/{name}`")
    if not _NAME.fullmatch(name):
        raise invalid_argument(field, f"not a workflow name: {clip(value, 80)!r}")
    return name


def execution_id(value: str, field: str = "name") -> str:
    """`executions/{id}` or a bare id -> the id."""
    ident = value.removeprefix("executions/")
    if not ident:
        raise invalid_argument(field, "required: `executions/{id}`")
    if not _NAME.fullmatch(ident):
        raise invalid_argument(field, f"not an execution name: {clip(value, 80)!r}")
    return ident


def page_size(value: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    if value < 0:
        raise invalid_argument("page_size", "must not be negative")
    if value == 0:
        return default
    return min(value, MAX_PAGE_SIZE)


def encode_token(kind: str, after: Any, query: str = "") -> str:
    raw = json.dumps({"k": kind, "a": after, "q": query}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# What each list's tokens hold: the id or name a page ends at, or an event sequence.
_POSITION_KINDS = {"events": int, "history": int}
# Event sequences are int64 on the wire and 32-bit integers in the stores: an `after_sequence`
# past the largest one a store can hold means "after every event" and is read as that.
MAX_SEQUENCE = 2**31 - 1


def decode_token(token: str, kind: str, query: str = "") -> Any:
    """The position a page token resumes after; None for an empty token.

    Tokens are not signed: a forged one is checked like any request field (the position's type
    and range), so it can only select a page, never reach the store as a wrong-typed value."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["k"] != kind:
            raise ValueError("token of another list")
        after = data["a"]
        if _POSITION_KINDS.get(kind, str) is int:
            if type(after) is not int or not 0 <= after <= 2**63 - 1:
                raise ValueError("not a sequence")
            after = min(after, MAX_SEQUENCE)
        elif kind == "waits":
            if not (
                isinstance(after, list)
                and len(after) == 2
                and all(isinstance(a, str) for a in after)
                and _NAME.fullmatch(after[0])
                and _NODE_KEY.fullmatch(after[1])
            ):
                raise ValueError("not an execution and node")
            after = (after[0], after[1])
        elif not isinstance(after, str) or len(after) > 256 or not _NAME.fullmatch(after):
            raise ValueError("not a name")
    except (ValueError, KeyError, TypeError):
        raise invalid_argument("page_token", "not a token from this list") from None
    if data.get("q", "") != query:
        raise invalid_argument("page_token", "the request changed since the token was issued")
    return after


def sequence(value: int, field: str = "after_sequence") -> int:
    """An `after_sequence` from a request: not negative; past MAX_SEQUENCE read as MAX_SEQUENCE."""
    if value < 0:
        raise invalid_argument(field, "must not be negative")
    return min(value, MAX_SEQUENCE)


# A filter is a flat AND of clauses (no parentheses to nest): bounded so that no filter can
# make the parser slow or an error message too big to deliver.
MAX_FILTER_LENGTH = 1000
MAX_FILTER_CLAUSES = 20


@functools.lru_cache(maxsize=8)
def _clause(fields: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(f) for f in fields)
    return re.compile(
        rf"""\s*(?P<field>{names})\s*
            (?:(?P<eq>=)\s*(?P<value>"[^"]*"|[A-Za-z0-9_.\-/]+)
              |(?P<in>IN)\s*\((?P<values>[^()]*)\))\s*""",
        re.VERBOSE | re.IGNORECASE,
    )


def filter_clauses(text: str, fields: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """`a = "x" AND b IN (P, Q)` -> [("a", ["x"]), ("b", ["P", "Q"])], field names lower-case."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid_argument("filter", f"at most {MAX_FILTER_LENGTH} characters, got {len(text)}")
    clauses = re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE)
    if len(clauses) > MAX_FILTER_CLAUSES:
        raise invalid_argument("filter", f"at most {MAX_FILTER_CLAUSES} clauses joined by AND")
    parsed: list[tuple[str, list[str]]] = []
    pattern = _clause(fields)
    for clause in clauses:
        match = pattern.fullmatch(clause)
        if not match:
            raise invalid_argument(
                "filter",
                f"cannot parse {clip(clause, 60)!r}; write `field = value` or"
                f" `field IN (a, b)` joined by AND, fields: {', '.join(fields)}",
            )
        values = (
            [match["value"]]
            if match["eq"]
            else [v for v in re.split(r"[\s,]+", match["values"]) if v]
        )
        parsed.append((match["field"].lower(), [v.strip('"') for v in values]))
    return parsed


def execution_filter(text: str) -> tuple[str | None, tuple[ExecutionState, ...]]:
    """`workflow = "NAME" AND state = RUNNING` or `state IN (RUNNING, WAITING)`."""
    workflow: str | None = None
    states: list[ExecutionState] = []
    if not text.strip():
        return None, ()
    for field, values in filter_clauses(text, ("workflow", "state")):
        if field == "workflow":
            if len(values) != 1:
                raise invalid_argument("filter", "workflow takes one name")
            workflow = workflow_name(values[0], "filter")
        else:
            for value in values:
                name = value.upper().removeprefix("STATE_")
                try:
                    states.append(ExecutionState(name))
                except ValueError:
                    raise invalid_argument("filter", f"unknown state {clip(value, 60)!r}") from None
    return workflow, tuple(states)


# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def time_bound(stamp: Timestamp, field: str) -> float:
    """A Timestamp field as seconds since the epoch; out of the Timestamp's range is refused
    (a hand-built message can carry any seconds and nanos)."""
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS:
        raise invalid_argument(field, "seconds out of the range 0001-01-01 to 9999-12-31")
    if not 0 <= stamp.nanos <= 999_999_999:
        raise invalid_argument(field, "nanos must be in 0..999999999")
    return stamp.seconds + stamp.nanos / 1e9


def execution_times(request: pb.ListExecutionsRequest) -> tuple[float | None, float | None]:
    """`created_after` and `created_before` of a ListExecutions request (None when unset)."""
    after = (
        time_bound(request.created_after, "created_after")
        if request.HasField("created_after")
        else None
    )
    before = (
        time_bound(request.created_before, "created_before")
        if request.HasField("created_before")
        else None
    )
    if after is not None and before is not None and before <= after:
        raise invalid_argument("created_before", "must be later than created_after")
    return after, before


# StartExecution's `wait`: how long it holds the call when `wait_timeout` is unset, and at most.
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 300.0


def start_wait(request: pb.StartExecutionRequest) -> float | None:
    """How long a StartExecution waits for the execution's end (None: it answers at once).
    Checked before anything starts, so a refused request starts nothing."""
    has_timeout = request.HasField("wait_timeout")
    if not request.wait:
        if has_timeout:
            raise invalid_argument("wait_timeout", "only with `wait: true`")
        return None
    if not has_timeout:
        return DEFAULT_WAIT_SECONDS
    seconds = request.wait_timeout.seconds + request.wait_timeout.nanos / 1e9
    if seconds <= 0:
        raise invalid_argument("wait_timeout", f"must be more than 0s, got {seconds:g}s")
    if seconds > MAX_WAIT_SECONDS:
        raise invalid_argument(
            "wait_timeout", f"at most {MAX_WAIT_SECONDS:g}s (5 minutes), got {seconds:g}s"
        )
    return seconds


def newest_first(order: int) -> bool:
    """ListExecutions' `order`: True for newest first; UNSPECIFIED is oldest first."""
    if order not in pb.ExecutionOrder.values():
        raise invalid_argument("order", f"unknown order {order}")
    return order == pb.EXECUTION_ORDER_NEWEST_FIRST


def execution_list_query(request: pb.ListExecutionsRequest) -> str:
    """What a ListExecutions page token is bound to: the filter, and the times and order when
    set (so tokens issued before those fields existed stay good)."""
    extra = [
        f"{name}={getattr(request, name).ToJsonString()}"
        for name in ("created_after", "created_before")
        if request.HasField(name)
    ]
    if request.order:
        extra.append(f"order={request.order}")
    return "\n".join([request.filter, *extra]) if extra else request.filter
