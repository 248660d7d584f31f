"""NATS JetStream bus: subject per tenant, workflow and execution; dedup by event id.

Subject: `PREFIX.TENANT.WORKFLOW.EXECUTION_ID` (default prefix `agentrun.events`); the stream
(default `AGENTRUN_EVENTS`, created when missing, file storage) takes `PREFIX.>`. Each message
carries `Nats-Msg-Id: EXECUTION_ID:SEQUENCE`, so JetStream drops a republished event within its
duplicate window (default 2 minutes), and the JSON body holds the whole event.

Config (`events: {bus: nats, nats: {...}}`): url (default nats://127.0.0.1:4222), stream,
subject_prefix, duplicate_window (2m), publish_timeout (2s), max_age (0: forever), replicas (1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agentrun.integrations.events.base import BusEvent, BusUnavailable, EventBus, subject_token
from agentrun.integrations.util import parse_seconds

_KEYS = {
    "url",
    "stream",
    "subject_prefix",
    "duplicate_window",
    "publish_timeout",
    "max_age",
    "replicas",
    "connect_timeout",
}


class NatsBus(EventBus):
    name = "nats"

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - _KEYS
        if unknown:
            raise ValueError(f"events.nats: unknown keys {', '.join(sorted(unknown))}")
        self.url = config.get("url", "nats://127.0.0.1:4222")
        self.stream = config.get("stream", "AGENTRUN_EVENTS")
        self.prefix = config.get("subject_prefix", "agentrun.events")
        self.duplicate_window = parse_seconds(config.get("duplicate_window", 120))
        self.publish_timeout = parse_seconds(config.get("publish_timeout", 2))
        self.connect_timeout = parse_seconds(config.get("connect_timeout", 2))
        self.max_age = parse_seconds(config.get("max_age", 0))
        self.replicas = int(config.get("replicas", 1))
        self._nc: Any = None
        self._js: Any = None
        self._stream_ready = False

    def subject(self, tenant: str, workflow: str, execution_id: str) -> str:
        return f"{self.prefix}.{subject_token(tenant)}.{subject_token(workflow)}.{subject_token(execution_id)}"

    async def connect(self) -> None:
        import nats
        from nats.errors import Error as NatsError

        if self._nc is not None and not self._nc.is_closed and not self._nc.is_connected:
            raise BusUnavailable(f"NATS at {self.url} is unreachable (reconnecting)")
        if self._nc is None or self._nc.is_closed:
            try:
                self._nc = await nats.connect(
                    self.url,
                    connect_timeout=self.connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    # The first connection may fail: the publisher tries again.
                    error_cb=_quiet,
                    disconnected_cb=_quiet_cb,
                    reconnected_cb=_quiet_cb,
                    closed_cb=_quiet_cb,
                )
            except (TimeoutError, OSError, NatsError) as exc:
                self._nc = None
                raise BusUnavailable(f"cannot connect to NATS at {self.url}: {exc!r}") from None
            self._js = self._nc.jetstream(timeout=self.publish_timeout)
        if not self._stream_ready:
            await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        from nats.errors import Error as NatsError
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        try:
            try:
                await self._js.stream_info(self.stream)
            except NotFoundError:
                await self._js.add_stream(
                    StreamConfig(
                        name=self.stream,
                        subjects=[f"{self.prefix}.>"],
                        storage=StorageType.FILE,
                        duplicate_window=self.duplicate_window,
                        max_age=self.max_age or None,
                        num_replicas=self.replicas,
                    )
                )
        except (TimeoutError, NatsError, OSError) as exc:
            raise BusUnavailable(f"JetStream stream {self.stream}: {exc!r}") from None
        self._stream_ready = True

    async def publish(self, event: BusEvent) -> None:
        from nats.errors import Error as NatsError

        if self._js is None or not self._stream_ready or not self._nc.is_connected:
            await self.connect()
        try:
            await self._js.publish(
                self.subject(event.tenant, event.workflow, event.execution_id),
                event.to_json(),
                timeout=self.publish_timeout,
                stream=self.stream,
                headers={
                    "Nats-Msg-Id": event.id,
                    "Agentrun-Sequence": str(event.sequence),
                    "Agentrun-Type": event.type,
                },
            )
        except (TimeoutError, NatsError, OSError) as exc:
            raise BusUnavailable(f"NATS publish failed: {exc!r}") from None

    async def last_sequence(self, tenant: str, workflow: str, execution_id: str) -> int | None:
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        if self._js is None or not self._stream_ready or not self._nc.is_connected:
            await self.connect()
        try:
            msg = await self._js.get_last_msg(
                self.stream, self.subject(tenant, workflow, execution_id)
            )
        except NotFoundError:
            return 0
        except (TimeoutError, NatsError, OSError) as exc:
            raise BusUnavailable(f"NATS lookup failed: {exc!r}") from None
        headers = msg.headers or {}
        if "Agentrun-Sequence" in headers:
            return int(headers["Agentrun-Sequence"])
        return BusEvent.from_json(msg.data).sequence

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._stream_ready = False
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except Exception:
                pass


async def _quiet(exc: Exception) -> None:
    return None


async def _quiet_cb() -> None:
    return None
