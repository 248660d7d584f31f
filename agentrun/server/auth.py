"""API-key authentication: `authorization: Bearer KEY` metadata, each key bound to a tenant.

The interceptor sets the caller's tenant (and key) in context variables that servicers read
with `current_tenant()`; with auth off every call runs as the tenant "default".
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from agentrun.engine.runtime.common import DEFAULT_TENANT
from agentrun.server._wrap import CachingInterceptor, wrap_before
from agentrun.server.errors import ApiError, abort

# Methods callable without a key: probes must work before a client has credentials.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)

_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=DEFAULT_TENANT)
_key: contextvars.ContextVar[ApiKey | None] = contextvars.ContextVar("api_key", default=None)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    tenant: str
    # Requests per second and bucket size; None: the server's default.
    rate: float | None = None
    burst: float | None = None
    # A short label for logs; never the key itself.
    name: str = ""


def current_tenant() -> str:
    return _tenant.get()


def call_tenant() -> str | None:
    """The tenant the auth interceptor set for this call; None outside one (startup,
    background work), where log lines name no tenant."""
    return _tenant.get(None)


def current_key() -> ApiKey | None:
    return _key.get()


def parse_env_keys(text: str) -> list[ApiKey]:
    """`key1:tenant1,key2:tenant2` (a key without `:tenant` belongs to "default")."""
    keys = []
    for n, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        key, _, tenant = item.partition(":")
        keys.append(
            ApiKey(key=key.strip(), tenant=tenant.strip() or DEFAULT_TENANT, name=f"env#{n}")
        )
    return keys


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
            return None
        if name == "x-api-key":
            return value.decode() if isinstance(value, bytes) else value
    return None


class AuthInterceptor(CachingInterceptor):
    """Refuses calls without a known key (UNAUTHENTICATED) and binds the key's tenant."""

    def __init__(self, keys: Mapping[str, ApiKey] | Iterable[ApiKey]) -> None:
        super().__init__()
        if isinstance(keys, Mapping):
            self._keys = dict(keys)
        else:
            self._keys = {k.key: k for k in keys}

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if method.startswith(PUBLIC_PREFIXES):
            return None
        return wrap_before(handler, method, self._check)

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        token = _bearer(context.invocation_metadata())
        key = self._keys.get(token) if token else None
        if key is None:
            await abort(
                context,
                ApiError(
                    "UNAUTHENTICATED",
                    "a valid API key is required: send `authorization: Bearer KEY`"
                    if token is None
                    else "unknown API key",
                ),
            )
            return
        _tenant.set(key.tenant)
        _key.set(key)
