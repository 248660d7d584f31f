"""What a request to start a run becomes, the same for an execution and an instance.

Both interpreters start their runs from a client's request: a new id that sorts by creation
time, the input checked against the workflow's schema, and a fingerprint of the request so
that a repeated `request_id` returns the first run, or is refused when it asked for another.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import jsonschema

from agentrun.engine import sizes
from agentrun.engine.errors import AlreadyExists, Diagnostic, InvalidInput
from agentrun.engine.schema_numbers import coerce_numbers


class StartOptions(TypedDict, total=False):
    """The keywords of a start both façades take (`Engine.start_execution`,
    `MachineEngine.create_instance`), declared once: in the name of `tenant` (default: the
    default tenant), of workflow `version` (default: the newest), once per `request_id`, as
    the child of `parent` (its execution id and node id), with `labels`."""

    tenant: str
    version: int | None
    request_id: str | None
    parent: tuple[str, str] | None
    labels: Mapping[str, str] | None


def start_options(options: StartOptions) -> StartOptions:
    """`options` as given; a keyword StartOptions does not name is refused, as a signature
    that listed them would (typed callers are checked before they run, the rest here)."""
    if options.keys() <= _START_OPTIONS:  # every start: no set built, nothing sorted
        return options
    for name in sorted(options.keys() - _START_OPTIONS):
        raise TypeError(f"unexpected keyword argument {name!r}")
    return options


_START_OPTIONS = StartOptions.__optional_keys__


_last_id = [0, 0]  # (millisecond, random part) of this process's newest id
_id_lock = threading.Lock()
# Random bytes read ahead for the ids' random parts (6 bytes each): one urandom call per
# _RANDOM_READ ids instead of one each. A forked child reads its own (see _forked).
_RANDOM_READ = 6 * 256


class _ReadAhead:
    data = b""  # the bytes read
    at = 0  # the offset of the next unused


_random = _ReadAhead()


def new_execution_id(clock: Callable[[], float] = time.time) -> str:
    """Ids sort by creation time (millisecond prefix), then by chance.

    Within one process they also sort in creation order: an id made in the same millisecond
    as the one before (or with a clock that stepped back) takes the previous random part plus
    one, as monotonic ULIDs do, so ListExecutions pages in start order."""
    millis = int(clock() * 1000)
    with _id_lock:
        last_ms, last_rand = _last_id
        if millis <= last_ms and last_rand < 0xFFFF_FFFF_FFFF:
            millis, rand = last_ms, last_rand + 1
        else:
            if _random.at >= len(_random.data):
                _random.data, _random.at = os.urandom(_RANDOM_READ), 0
            at = _random.at
            _random.at = at + 6
            # 47 random bits: room to count up within a millisecond
            rand = int.from_bytes(_random.data[at : at + 6], "big") >> 1
        _last_id[:] = [millis, rand]
    return f"{millis:012x}{rand:012x}"


def _forked() -> None:
    """A forked child neither reuses its parent's unread random bytes nor counts on from the
    parent's last id: either would make the ids the parent makes next."""
    _random.data, _random.at = b"", 0
    _last_id[:] = [0, 0]


os.register_at_fork(after_in_child=_forked)

# The fingerprint's encoding (json.dumps(payload, sort_keys=True, default=str)), built once:
# `dumps` with options builds an encoder per call.
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, default=str)


def request_fingerprint(**payload: Any) -> str:
    """What a `request_id` stands for: a repeat with another payload is refused."""
    text = _FINGERPRINT_JSON.encode(payload)
    return hashlib.sha256(text.encode()).hexdigest()


def refuse_changed_repeat(
    stored_hash: str | None, request_hash: str | None, request_id: str | None
) -> None:
    """A `request_id` already stored for another payload: AlreadyExists."""
    if stored_hash != request_hash:
        raise AlreadyExists(
            f"request_id {request_id!r} was used for a different request", request_id=request_id
        )


def checked_input(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """A run's input (None: `{}`) within the size limit and valid for the workflow's
    `input_schema`, its numbers typed as the schema declares them."""
    value = {} if value is None else value
    sizes.check_request("input", value, "input_bytes")
    return value if schema is None else validate_input(value, schema)


def validate_input(value: Any, schema: Mapping[str, Any]) -> Any:
    """Raises InvalidInput listing every problem; returns the value with its numbers typed as
    the schema declares them (`number`: double, `integer`: int; agentrun.engine.schema_numbers)."""
    validator = _validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(e.path)):
        where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.path)
        problems.append(Diagnostic(f"input{where}", err.message))
    if problems:
        raise InvalidInput(problems)
    return coerce_numbers(value, schema)


# Validators by their schema's id, the schema kept alive with its validator (so its id is not
# reused): a workflow version's schema is one object, whose validator is built at its first
# start instead of at every start. Bounded for schemas that are not (a rerun's, a test's).
_VALIDATORS: dict[int, tuple[Mapping[str, Any], Any]] = {}
_MAX_VALIDATORS = 256


def _validator(schema: Mapping[str, Any]) -> Any:
    known = _VALIDATORS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    validator = jsonschema.validators.validator_for(schema)(schema)
    if len(_VALIDATORS) >= _MAX_VALIDATORS:
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator
