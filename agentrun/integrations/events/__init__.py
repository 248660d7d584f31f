"""Event buses: every execution event published to a bus (in-memory, NATS JetStream, Kafka).

Config:
  events:
    bus: nats                 # none (default) | memory | nats | kafka
    queue_size: 10000         # events held in memory before an execution is caught up from the store
    retry_interval: 500ms     # first wait before probing a bus that is down (doubles up to max_retry_interval)
    max_retry_interval: 5s
    nats: {url: nats://127.0.0.1:4222, stream: AGENTRUN_EVENTS, subject_prefix: agentrun.events}
    kafka: {bootstrap: broker:9092, topic: agentrun.events}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentrun.integrations.events.base import BusEvent, BusUnavailable, EventBus, subject_token
from agentrun.integrations.events.memory import MemoryBus
from agentrun.integrations.events.publisher import BusPublisher
from agentrun.integrations.util import expand_env, parse_seconds

_KEYS = {"bus", "queue_size", "retry_interval", "max_retry_interval", "nats", "kafka"}


def bus_from_config(section: Mapping[str, Any]) -> EventBus | None:
    kind = str(section.get("bus") or "none").lower()
    if kind == "none":
        return None
    if kind == "memory":
        return MemoryBus()
    if kind == "nats":
        from agentrun.integrations.events.nats import NatsBus

        _require("nats", "nats-py", kind)
        return NatsBus(section.get("nats"))
    if kind == "kafka":
        from agentrun.integrations.events.kafka import KafkaBus

        _require("aiokafka", "aiokafka", kind)
        return KafkaBus(section.get("kafka"))
    raise ValueError(f"events.bus: must be none, memory, nats or kafka, not {kind!r}")


def _require(module: str, package: str, kind: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"events.bus: {kind} needs the {package} package (pip install {package})")


def publisher_from_config(engine: Any, config: Mapping[str, Any]) -> BusPublisher | None:
    """The publisher for `events:` attached to `engine.hub` (not started), or None."""
    section = expand_env(dict(config.get("events") or {}))
    unknown = set(section) - _KEYS
    if unknown:
        raise ValueError(f"events: unknown keys {', '.join(sorted(unknown))}")
    bus = bus_from_config(section)
    if bus is None:
        return None
    publisher = BusPublisher(
        engine.store,
        bus,
        queue_size=int(section.get("queue_size", 10_000)),
        retry_interval=parse_seconds(section.get("retry_interval", 0.5)),
        max_retry_interval=parse_seconds(section.get("max_retry_interval", 5)),
        instrumentation=engine.instrumentation,
    )
    return publisher.attach(engine.hub)


__all__ = [
    "BusEvent",
    "BusPublisher",
    "BusUnavailable",
    "EventBus",
    "MemoryBus",
    "bus_from_config",
    "publisher_from_config",
    "subject_token",
]
