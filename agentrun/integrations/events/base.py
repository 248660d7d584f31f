"""The event bus interface: every execution event, published with a stable id.

An event's id is `EXECUTION_ID:SEQUENCE`; a bus that sees the same id twice keeps one copy
(JetStream's Nats-Msg-Id dedup) or passes the id along for consumers to drop duplicates
(Kafka header `event_id`). Delivery is at least once.
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from agentrun.storage.records import EventRecord

_TOKEN = re.compile(r"[^A-Za-z0-9_\-]")


class BusUnavailable(Exception):
    """The bus cannot take the event now; the publisher keeps it and tries again later."""


@dataclass(frozen=True, slots=True)
class BusEvent:
    id: str
    tenant: str
    workflow: str
    execution_id: str
    sequence: int
    type: str
    time: float
    node_id: str | None
    data: dict[str, Any] | None

    @classmethod
    def from_record(cls, record: EventRecord, *, tenant: str, workflow: str) -> BusEvent:
        return cls(
            id=f"{record.execution_id}:{record.sequence}",
            tenant=tenant,
            workflow=workflow,
            execution_id=record.execution_id,
            sequence=record.sequence,
            type=record.type,
            time=record.time,
            node_id=record.node_id,
            data=record.data,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BusEvent:
        return cls(**json.loads(raw))


def subject_token(text: str) -> str:
    """A subject/topic-safe token: dots, wildcards and spaces become `_`."""
    return _TOKEN.sub("_", text) or "_"


class EventBus(abc.ABC):
    name: str = "bus"

    async def connect(self) -> None:
        """Connects; raises BusUnavailable when the bus cannot be reached (tried again later)."""

    @abc.abstractmethod
    async def publish(self, event: BusEvent) -> None:
        """Publishes one event, durably when the bus is; raises BusUnavailable on an outage."""

    async def last_sequence(self, tenant: str, workflow: str, execution_id: str) -> int | None:
        """The highest sequence the bus holds for the execution (0: none), or None when the
        bus cannot tell; the publisher then starts again from the first event."""
        return None

    async def close(self) -> None:
        """Releases connections."""
