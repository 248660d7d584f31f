"""Channel settings shared by Client and AsyncClient."""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"
# Unary calls are retried on UNAVAILABLE by the channel; starts and signals carry ids, so a
# retry is applied once.
_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [
                {"service": "agentrun.v1.WorkflowService"},
                {"service": "agentrun.v1.ExecutionService"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def target(value: str | None) -> str:
    return value or os.environ.get("AGENTRUN_ADDRESS") or DEFAULT_TARGET


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    key = api_key if api_key is not None else os.environ.get("AGENTRUN_API_KEY")
    return (("authorization", f"Bearer {key}"),) if key else ()


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ]
