"""Bounds on what one expression may cost and how large the data of a step may be.

With the defaults one execution's stored data stays within a few MiB (input, output and
variables of 1 MiB each), well inside a gRPC answer.

Process-wide, like the expression compiler they apply to: a server sets them once from its
config (`data_limits:` section, see docs/runtime.md) before it starts the engine; everything else
uses the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from agentrun.engine.expr_cost import DEFAULT_COST_LIMIT


@dataclass(frozen=True, slots=True)
class DataLimits:
    # Upper bound on the estimated cost of one expression evaluation (agentrun.engine.expr_cost).
    expression_cost: int = DEFAULT_COST_LIMIT
    # Bytes of compact JSON (agentrun.engine.sizes): an execution's or instance's input, and
    # what a node's incoming edges map into it;
    input_bytes: int = 1024 * 1024
    # a node's output (after its `output` transform), the variables, the execution's output;
    output_bytes: int = 1024 * 1024
    # a signal's data, a state machine event's data;
    signal_bytes: int = 1024 * 1024
    # an event a tool or agent emits while it runs (agent.delta, tool notes).
    event_bytes: int = 256 * 1024


_current = DataLimits()


def current() -> DataLimits:
    return _current


def configure(limits: DataLimits) -> None:
    global _current
    _current = limits


def from_mapping(data: Mapping[str, Any] | None) -> DataLimits:
    """The limits named in a config's `data_limits:` section, each a positive integer."""
    data = data or {}
    unknown = set(data) - {f.name for f in fields(DataLimits)}
    if unknown:
        raise ValueError(f"data_limits: unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, int] = {}
    for f in fields(DataLimits):
        if data.get(f.name) is None:
            continue
        value = data[f.name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"data_limits.{f.name}: must be a positive integer, got {value!r}")
        values[f.name] = value
    return replace(DataLimits(), **values)
