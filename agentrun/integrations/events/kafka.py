"""Kafka bus through aiokafka: one topic, keyed by execution id (so one execution's events
stay in order on one partition), header `event_id` = `EXECUTION_ID:SEQUENCE` for consumers
to drop duplicates. The producer is idempotent (acks=all), so its own retries add none.

Config (`events: {bus: kafka, kafka: {...}}`): bootstrap (or $AGENTRUN_KAFKA_BOOTSTRAP),
topic (default `agentrun.events`), publish_timeout (5s), client_id.
No Kafka broker runs on the development machine; its tests run when AGENTRUN_KAFKA_BOOTSTRAP is set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from agentrun.integrations.events.base import BusEvent, BusUnavailable, EventBus
from agentrun.integrations.util import parse_seconds


class KafkaBus(EventBus):
    name = "kafka"

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - {"bootstrap", "topic", "publish_timeout", "client_id"}
        if unknown:
            raise ValueError(f"events.kafka: unknown keys {', '.join(sorted(unknown))}")
        self.bootstrap = config.get("bootstrap") or os.environ.get("AGENTRUN_KAFKA_BOOTSTRAP") or ""
        if not self.bootstrap:
            raise ValueError("events.kafka.bootstrap: required (or set AGENTRUN_KAFKA_BOOTSTRAP)")
        self.topic = config.get("topic", "agentrun.events")
        self.publish_timeout = parse_seconds(config.get("publish_timeout", 5))
        self.client_id = config.get("client_id", "agentrun")
        self._producer: Any = None

    async def connect(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=int(self.publish_timeout * 1000),
        )
        try:
            await asyncio.wait_for(producer.start(), self.publish_timeout * 2)
        except (TimeoutError, KafkaError, OSError) as exc:
            await _stop_quietly(producer)
            raise BusUnavailable(f"cannot connect to Kafka at {self.bootstrap}: {exc!r}") from None
        self._producer = producer

    async def publish(self, event: BusEvent) -> None:
        from aiokafka.errors import KafkaError

        await self.connect()
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    self.topic,
                    event.to_json(),
                    key=event.execution_id.encode(),
                    headers=[("event_id", event.id.encode()), ("type", event.type.encode())],
                ),
                self.publish_timeout,
            )
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BusUnavailable(f"Kafka publish failed: {exc!r}") from None

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)


async def _stop_quietly(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception:
        pass
