"""What handling one event works on: the event (`Event`), the instance's state while the
event is handled (`Work`, applied only once the event is done), and the two ways an action
stops it (`ActionFailed`: a final failure; `Suspended`: an attempt to retry later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentrun.storage.machines import HistoryRecord, InstanceRecord, InstanceState, TimerRecord

ACTIVE = InstanceState.ACTIVE


class ActionFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


class Suspended(Exception):
    """An action's attempt failed and `next_retry` wants attempt `attempt` after `delay`
    seconds: the event stops here, to be stored as the instance's pending event."""

    def __init__(self, attempt: int, delay: float, started: float, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.attempt = attempt
        self.delay = delay
        self.started = started
        self.error = error


@dataclass(slots=True)
class Event:
    name: str
    id: str | None
    data: Any
    # external | timer | invoke | cancel
    source: str = "external"
    # timer: its key; invoke: the child execution it reports on
    ref: str | None = None
    # timer: its index in the state's `after`
    index: int = 0
    # invoke: whether the child failed
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As an instance's pending event stores it."""
        return {
            "name": self.name,
            "id": self.id,
            "data": self.data,
            "source": self.source,
            "ref": self.ref,
            "index": self.index,
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            d["name"],
            d.get("id"),
            d.get("data"),
            d.get("source", "external"),
            d.get("ref"),
            d.get("index", 0),
            bool(d.get("failed")),
        )


class Work:
    """The instance's state while an event is handled; applied only once the event is done."""

    __slots__ = (
        "calls",
        "current",
        "data",
        "entries",
        "entry_sequence",
        "error",
        "fired",
        "invoke",
        "invoke_failed",
        "now",
        "pending",
        "record",
        "resumed",
        "seq",
        "start_invoke",
        "state",
        "stop_invoke",
        "timers",
    )

    def __init__(self, record: InstanceRecord, now: float) -> None:
        self.record = record
        self.current = record.current
        self.data = record.data
        self.state = record.state
        self.entry_sequence = record.entry_sequence
        self.seq = record.last_sequence
        self.entries: list[HistoryRecord] = []
        # None: unchanged; a list: the instance's timers from now on.
        self.timers: list[TimerRecord] | None = None
        self.fired: str | None = None
        self.invoke = record.invoke_execution
        self.error: dict[str, Any] | None = None
        # Child executions to wait for / to cancel once the batch is committed.
        self.start_invoke: str | None = None
        self.stop_invoke: list[str] = []
        # The invoke could not start: its error, reported as an `invoke:error` event.
        self.invoke_failed: dict[str, Any] | None = None
        self.now = now
        # The results of the actions called while handling the event, in call order. A
        # pending event handled again (`pending`: the instance's) replays those of its pass
        # before, and its waiting action resumes at its next attempt (once: `resumed`).
        self.calls: list[dict[str, Any]] = []
        self.pending = record.pending
        self.resumed = False

    def add(self, entry: HistoryRecord) -> HistoryRecord:
        self.entries.append(entry)
        return entry

    def snapshot(self) -> InstanceRecord:
        r = self.record
        return InstanceRecord(
            r.id,
            r.tenant,
            r.workflow,
            r.version,
            self.state,
            self.current,
            self.data,
            r.input,
            r.created_at,
            self.now,
            self.now if self.state is not ACTIVE else None,
            self.error,
            r.request_id,
            r.request_hash,
            r.parent_id,
            r.parent_node,
            self.seq,
            self.entry_sequence,
            self.invoke,
            r.labels,
            None,
            r.owner,
            r.lease_epoch,
            r.lease_expires_at,
        )
