"""What every `--json` prints: the protobuf JSON mapping (google.protobuf.json_format) of the
messages the server answered, or that `run` built from its records.

One shape everywhere: proto field names (`node_id`; the fields renamed for generated code
under their file words, `pass` rather than `pass_node`: agentrun.spec_words), states as the
enum's names (`STATE_SUCCEEDED`), times as RFC 3339 in UTC (`2026-01-02T03:04:05.678Z`),
64-bit integers as strings, fields at their default value left out. JSON values (`input`,
`output`, `data`) are doubles on the wire: a whole number prints as an integer (`3`, not
`3.0`), the rule the server reads numbers by.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from agentrun import spec_words
from agentrun.client._convert import _ints

__all__ = ["print_json", "short_json", "to_json"]


def to_json(value: Any) -> Any:
    """`value` with every protobuf message (or SDK object that keeps one as `.message`) in its
    JSON mapping; dicts and lists are walked, anything else is kept as is."""
    if isinstance(value, Message):
        return _ints(spec_words.to_dict(value))
    message = getattr(value, "message", None)
    if isinstance(message, Message):
        return to_json(message)
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value


def print_json(value: Any, *, lines: bool = False) -> None:
    """Prints `value` as JSON: indented, or on one line (`lines`: a stream, one per line)."""
    text = json.dumps(to_json(value), indent=None if lines else 2, ensure_ascii=False)
    print(text, flush=True)


def short_json(value: Any, limit: int) -> str:
    """`value` as compact JSON, cut to `limit` characters with `…` when longer: a line of
    progress or of `agentrun watch` shows that there is more."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
