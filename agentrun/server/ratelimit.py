"""Per-key request rate limits: a token bucket per API key; over the limit a call fails
RESOURCE_EXHAUSTED with a RetryInfo saying when a token will be there."""

from __future__ import annotations

import time
from typing import Any

import grpc

from agentrun.server._wrap import CachingInterceptor, wrap_before
from agentrun.server.auth import PUBLIC_PREFIXES, current_key
from agentrun.server.errors import ApiError, abort


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> float:
        """Takes a token; returns 0 on success, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimitInterceptor(CachingInterceptor):
    """Runs after AuthInterceptor: limits each key to its rate (or the default one)."""

    def __init__(self, *, rate: float, burst: float | None = None) -> None:
        super().__init__()
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._buckets: dict[str, TokenBucket] = {}

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if method.startswith(PUBLIC_PREFIXES):
            return None
        return wrap_before(handler, method, self._check)

    def _bucket(self) -> TokenBucket | None:
        key = current_key()
        name = key.key if key is not None else ""
        bucket = self._buckets.get(name)
        if bucket is None:
            rate = key.rate if key is not None and key.rate is not None else self._rate
            burst = key.burst if key is not None and key.burst is not None else self._burst
            if not rate or rate <= 0:
                return None
            bucket = self._buckets[name] = TokenBucket(rate, burst)
        return bucket

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        bucket = self._bucket()
        if bucket is None:
            return
        wait = bucket.take()
        if wait:
            await abort(
                context,
                ApiError(
                    "RATE_LIMITED",
                    f"request rate over the limit of {bucket.rate:g}/s; retry in {wait:.3f}s",
                    retry_after=wait,
                ),
            )
