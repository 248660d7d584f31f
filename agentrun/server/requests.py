"""Parsing of request fields: resource names, page sizes and tokens (AIP-158), filters."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from agentrun.server.errors import invalid_argument
from agentrun.storage.records import ExecutionState

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def workflow_name(value: str, field: str = "name") -> str:
    """`workflows/{name}` or a bare name -> the name."""
    name = value.removeprefix("workflows/")
    if not name:
        raise invalid_argument(field, "required: `workflows/{name}`")
    if not _NAME.fullmatch(name):
        raise invalid_argument(field, f"not a workflow name: {value!r}")
    return name


def execution_id(value: str, field: str = "name") -> str:
    """`executions/{id}` or a bare id -> the id."""
    ident = value.removeprefix("executions/")
    if not ident:
        raise invalid_argument(field, "required: `executions/{id}`")
    if not _NAME.fullmatch(ident):
        raise invalid_argument(field, f"not an execution name: {value!r}")
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


def decode_token(token: str, kind: str, query: str = "") -> Any:
    """The position a page token resumes after; None for an empty token."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["k"] != kind:
            raise ValueError("token of another list")
    except (ValueError, KeyError, TypeError):
        raise invalid_argument("page_token", "not a token from this list") from None
    if data.get("q", "") != query:
        raise invalid_argument("page_token", "the request changed since the token was issued")
    return data["a"]


_CLAUSE = re.compile(
    r"""\s*(?P<field>workflow|state)\s*
        (?:(?P<eq>=)\s*(?P<value>"[^"]*"|[A-Za-z0-9_.\-/]+)
          |(?P<in>IN)\s*\((?P<values>[^)]*)\))\s*""",
    re.VERBOSE | re.IGNORECASE,
)


def execution_filter(text: str) -> tuple[str | None, tuple[ExecutionState, ...]]:
    """`workflow = "NAME" AND state = RUNNING` or `state IN (RUNNING, WAITING)`."""
    workflow: str | None = None
    states: list[ExecutionState] = []
    if not text.strip():
        return None, ()
    for clause in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.fullmatch(clause)
        if not match:
            raise invalid_argument("filter", f"cannot parse {clause!r}")
        values = (
            [match["value"]]
            if match["eq"]
            else [v for v in re.split(r"[\s,]+", match["values"]) if v]
        )
        values = [v.strip('"') for v in values]
        if match["field"].lower() == "workflow":
            if len(values) != 1:
                raise invalid_argument("filter", "workflow takes one name")
            workflow = workflow_name(values[0], "filter")
        else:
            for value in values:
                name = value.upper().removeprefix("STATE_")
                try:
                    states.append(ExecutionState(name))
                except ValueError:
                    raise invalid_argument("filter", f"unknown state {value!r}") from None
    return workflow, tuple(states)
