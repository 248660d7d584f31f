"""Helpers for aio server interceptors that wrap a method handler's behaviour.

A wrapped handler is built once per method and cached, so an interceptor costs one dict
lookup and one extra await per call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

# before(context) runs before the behaviour; it may abort the call.
Before = Callable[[grpc.aio.ServicerContext, str], Awaitable[None]]


def wrap_before(handler: grpc.RpcMethodHandler, method: str, before: Before) -> Any:
    """A handler that awaits `before(context, method)` and then runs the original behaviour."""

    def unary_in(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await before(context, method)
                async for response in behavior(request, context):
                    yield response

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(context, method)
            return await behavior(request, context)

        return call

    return replace_behavior(handler, unary_in)


def wrap_errors(
    handler: grpc.RpcMethodHandler,
    on_error: Callable[[grpc.aio.ServicerContext, BaseException], Awaitable[None]],
) -> Any:
    """A handler that turns exceptions (other than aborts and cancellation) into statuses."""

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status
                    await on_error(context, exc)

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001
                await on_error(context, exc)

        return call

    return replace_behavior(handler, wrap)


def replace_behavior(handler: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: wrap(behavior)})
    return handler


class CachingInterceptor(grpc.aio.ServerInterceptor):
    """Base: wraps each method's handler once; `_wrap` returns None to leave it as is."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> Any:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method) or handler
        self._cache[method] = (handler, wrapped)
        return wrapped
