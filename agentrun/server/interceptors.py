"""Interceptors for errors and draining (auth and rate limits have their own modules)."""

from __future__ import annotations

import asyncio

import grpc

from agentrun.server._wrap import CachingInterceptor, wrap_before, wrap_errors
from agentrun.server.auth import PUBLIC_PREFIXES
from agentrun.server.errors import ApiError, abort

AGENTRUN_PREFIX = "/agentrun."


class ErrorInterceptor(CachingInterceptor):
    """Maps exceptions escaping agentrun servicers to statuses (agentrun.server.errors)."""

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> object:
        if not method.startswith(AGENTRUN_PREFIX):
            return None
        return wrap_errors(handler, abort)


class Lifecycle:
    """Shared flag set when the server starts draining (SIGTERM)."""

    def __init__(self) -> None:
        self.draining = asyncio.Event()

    @property
    def is_draining(self) -> bool:
        return self.draining.is_set()


class DrainInterceptor(CachingInterceptor):
    """While draining, refuses new calls with UNAVAILABLE (reason SHUTTING_DOWN)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        super().__init__()
        self._lifecycle = lifecycle

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> object:
        if method.startswith(PUBLIC_PREFIXES):
            return None
        return wrap_before(handler, method, self._check)

    async def _check(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if self._lifecycle.draining.is_set():
            await abort(context, ApiError("SHUTTING_DOWN", "the server is shutting down"))
