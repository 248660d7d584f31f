"""Interceptors for errors, draining and the end of each call (auth and rate limits have their
own modules)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from agentrun.server._wrap import (
    CachingInterceptor,
    check_requests,
    replace_behavior,
    wrap_before,
    wrap_errors,
)
from agentrun.server.auth import PUBLIC_PREFIXES, current_tenant
from agentrun.server.errors import ApiError, abort, request_problem

access_log = logging.getLogger("agentrun.server.access")

AGENTRUN_PREFIX = "/agentrun."


class ErrorInterceptor(CachingInterceptor):
    """Maps exceptions escaping agentrun servicers to statuses (agentrun.server.errors), and
    answers requests that do not parse INVALID_ARGUMENT on every method (health and reflection
    too)."""

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if method.startswith(AGENTRUN_PREFIX):
            handler = wrap_errors(handler, abort)
        return check_requests(handler, request_problem, abort)


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

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if method.startswith(PUBLIC_PREFIXES):
            return None
        return wrap_before(handler, method, self._check)

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        if self._lifecycle.draining.is_set():
            await abort(context, ApiError("SHUTTING_DOWN", "the server is shutting down"))


# Observers of every finished agentrun call: (method, status code). The test suite registers one
# to fail any test in which a call answered INTERNAL or UNKNOWN; anything else may count codes.
CallObserver = Callable[[str, grpc.StatusCode], None]
CALL_OBSERVERS: list[CallObserver] = []

_CODES_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def status_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status a call's context holds now (OK when none was set)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return _CODES_BY_NUMBER.get(code or 0, grpc.StatusCode.UNKNOWN)


def final_status(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> grpc.StatusCode:
    """The status gRPC sends for a call that ended with `exc` (None: returned normally)."""
    if exc is None or isinstance(exc, (grpc.aio.AbortError, GeneratorExit)):
        return status_code(context)
    if isinstance(exc, asyncio.CancelledError):
        # Cancelled while sending a status it had set (an abort racing a server stop): the
        # caller got that status.
        code = status_code(context)
        return grpc.StatusCode.CANCELLED if code is grpc.StatusCode.OK else code
    # grpc answers UNKNOWN for an exception escaping the handler, or the code set before it.
    code = status_code(context)
    return grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    return str(context.peer())


def _no_peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    return ""


class CallEndInterceptor(CachingInterceptor):
    """Outermost: sees each call's final status. Writes the access log line (when enabled) and
    tells `CALL_OBSERVERS`."""

    def __init__(self, *, access_log: bool) -> None:
        super().__init__()
        self._access_log = access_log

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        ended = self._ended
        # The peer is read when the call starts: a stream cancelled by the server's shutdown
        # ends after grpc freed its call, and `context.peer()` then crashes the process.
        peer_of = _peer if self._access_log else _no_peer

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(behavior):

                async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                    started = time.perf_counter()
                    peer = peer_of(context)
                    error: BaseException | None = None
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        ended(method, context, started, peer, error)

                return gen

            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                peer = peer_of(context)
                error: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    ended(method, context, started, peer, error)

            return call

        return replace_behavior(handler, wrap)

    def _ended(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        peer: str,
        error: BaseException | None,
    ) -> None:
        if not self._access_log and not CALL_OBSERVERS:
            return  # nothing reads the status: not worked out on every call
        code = final_status(context, error)
        if self._access_log:
            access_log.info(
                "%s %s %.1fms tenant=%s peer=%s",
                method,
                code.name,
                (time.perf_counter() - started) * 1e3,
                current_tenant(),
                peer,
            )
        for observe in CALL_OBSERVERS:
            observe(method, code)
