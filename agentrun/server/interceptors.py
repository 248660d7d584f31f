"""Interceptors for errors and draining (auth and rate limits have their own modules)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from agentrun.server._wrap import CachingInterceptor, replace_behavior, wrap_before, wrap_errors
from agentrun.server.auth import PUBLIC_PREFIXES, current_tenant
from agentrun.server.errors import ApiError, abort

access_log = logging.getLogger("agentrun.server.access")

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


class LoggingInterceptor(CachingInterceptor):
    """One access-log line per call: method, status code, duration, tenant, peer."""

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> object:
        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(behavior):

                async def gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    started = time.perf_counter()
                    try:
                        async for response in behavior(request, context):
                            yield response
                    finally:
                        _log(method, context, started)

                return gen

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return await behavior(request, context)
                finally:
                    _log(method, context, started)

            return call

        return replace_behavior(handler, wrap)


def _log(method: str, context: grpc.aio.ServicerContext, started: float) -> None:
    code = context.code()
    name = (
        code.name if isinstance(code, grpc.StatusCode) else "OK" if code in (None, 0) else str(code)
    )
    access_log.info(
        "%s %s %.1fms tenant=%s peer=%s",
        method,
        name,
        (time.perf_counter() - started) * 1e3,
        current_tenant(),
        context.peer(),
    )
