"""The rows and decisions of the fleet's scheduler slots (`agentrun.storage.slots` keeps them
in PostgreSQL): plain dataclasses, so the engine's fleet scheduler names them without loading
SQLAlchemy in a process that never opens a SQL store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Decision", "Dispatcher", "FleetView", "RoundResult", "SlotRow"]


@dataclass(slots=True)
class SlotRow:
    """One call waiting for a slot or holding one."""

    replica: str
    n: int
    tenant: str
    workflow: str
    target: str
    bucket: str | None
    exec_rank: int
    node_rank: int
    seq: int = 0
    throttled: bool = False
    granted: bool = False


@dataclass(slots=True)
class FleetView:
    """What a round's decision reads, all under the round's lock."""

    now: float
    cursor: str
    # (tenant, workflow, target, granted rows)
    running: list[tuple[str, str, str, int]]
    # The first `depth` waiting rows of each lane, in order of service within the lane.
    candidates: list[SlotRow]
    # name -> (tokens, updated_at) of the buckets the candidates name (absent: never used).
    buckets: dict[str, tuple[float, float]]


@dataclass(slots=True)
class Decision:
    grants: list[SlotRow]
    # Rows a bucket held back for the first time.
    throttled: list[SlotRow]
    # Buckets whose tokens changed: name -> (tokens, updated_at).
    buckets: dict[str, tuple[float, float]]
    cursor: str
    # Seconds until a bucket holding a row back has a token again.
    wake_in: float | None = None
    # A lane ran out of candidates with room left: another round may grant more.
    more: bool = False


class Dispatcher(Protocol):
    def lane_depth(self, running: list[tuple[str, str, str, int]]) -> int:
        """How many waiting rows of each lane to read (0: none; every limit is full)."""
        ...

    def decide(self, view: FleetView) -> Decision: ...


@dataclass(slots=True)
class RoundResult:
    # This replica's rows granted since its last round: (n, throttled).
    granted: list[tuple[int, bool]] = field(default_factory=list)
    wake_in: float | None = None
    more: bool = False
