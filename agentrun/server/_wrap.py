"""Helpers for aio server interceptors that wrap a method handler's behaviour.

A wrapped handler is built once per method. The server does not hand its interceptors to
grpc.aio (which would run every one's `intercept_service` on every call): `wrapping` applies
them all where the handlers are registered (http/registry.py), so a call runs only the
wrapped behaviours.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

# before(context) runs before the behaviour; it may abort the call.
Before = Callable[[grpc.aio.ServicerContext[Any, Any], str], Awaitable[None]]


def wrap_before(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, before: Before
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that awaits `before(context, method)` and then runs the original behaviour."""

    def unary_in(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await before(context, method)
                async for response in behavior(request, context):
                    yield response

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await before(context, method)
            return await behavior(request, context)

        return call

    return replace_behavior(handler, unary_in)


def wrap_errors(
    handler: grpc.RpcMethodHandler[Any, Any],
    on_error: Callable[[grpc.aio.ServicerContext[Any, Any], BaseException], Awaitable[None]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that turns exceptions (other than aborts and cancellation) into statuses."""

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await on_error(context, exc)

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await on_error(context, exc)

        return call

    return replace_behavior(handler, wrap)


class Malformed:
    """What a request deserializer returns for bytes that are not a valid message (instead of
    raising, which grpc would answer UNKNOWN naming the Python exception class)."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


Check = Callable[[Any], "BaseException | None"]
OnRefused = Callable[[grpc.aio.ServicerContext[Any, Any], BaseException], Awaitable[None]]


def check_requests(
    handler: grpc.RpcMethodHandler[Any, Any], check: Check, on_refused: OnRefused
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler whose deserializer never raises (a request that does not parse - bad bytes,
    invalid UTF-8 in a string - becomes a `Malformed`), and which runs `check` on every request
    before the behaviour sees it: an exception it returns ends the call through `on_refused`."""
    parse = handler.request_deserializer
    owner = getattr(parse, "__self__", None)
    message_type = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "") or "message"

    async def checked(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async for request in requests:
            refused = check(request)
            if refused is not None:
                await on_refused(context, refused)
            yield request

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        streaming_in = handler.request_streaming
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if streaming_in:
                    request = checked(request, context)
                else:
                    refused = check(request)
                    if refused is not None:
                        await on_refused(context, refused)
                async for response in behavior(request, context):
                    yield response

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if streaming_in:
                request = checked(request, context)
            else:
                refused = check(request)
                if refused is not None:
                    await on_refused(context, refused)
            return await behavior(request, context)

        return call

    wrapped = replace_behavior(handler, wrap)
    if parse is None:
        return wrapped

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            return Malformed(message_type)

    fields: Any = wrapped  # a namedtuple (see replace_behavior)
    checked_handler: grpc.RpcMethodHandler[Any, Any] = fields._replace(
        request_deserializer=deserialize
    )
    return checked_handler


def replace_behavior(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler with its behaviour wrapped. grpc's handlers are namedtuples
    (grpc._utilities.RpcMethodHandler), which its stubs do not say: `_replace` is reached
    through Any."""
    fields: Any = handler
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            replaced: grpc.RpcMethodHandler[Any, Any] = fields._replace(**{kind: wrap(behavior)})
            return replaced
    return handler


# grpc's stubs make RpcMethodHandler generic, grpc itself does not: quoted.
Wrap = Callable[["grpc.RpcMethodHandler[Any, Any]", str], "grpc.RpcMethodHandler[Any, Any]"]


class WrappedOnce:
    """Each method's handler wrapped once: the wrapped one is kept while the handler asked
    for is the same object."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        self._cache: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def get(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._cache[method] = (handler, wrapped)
        return wrapped


class CachingInterceptor(grpc.aio.ServerInterceptor):
    """Base: wraps each method's handler once; `_wrap` returns None to leave it as is.

    As a grpc.aio interceptor it wraps on first use and caches; `wrapping` applies it where
    handlers are registered instead."""

    def __init__(self) -> None:
        self._once = WrappedOnce(lambda handler, method: self._wrap(handler, method) or handler)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._once.get(handler, handler_call_details.method)


def wrapping(interceptors: Sequence[CachingInterceptor]) -> Wrap:
    """What `interceptors` (the first the outermost) make of a method's handler, as grpc.aio
    would make it on each call, worked out once."""
    ordered = tuple(reversed(interceptors))

    def wrap(
        handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        for interceptor in ordered:
            handler = interceptor._wrap(handler, method) or handler
        return handler

    return wrap


class WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler (health, reflection) whose method handlers come out wrapped, each
    wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._once = WrappedOnce(wrap)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._once.get(handler, handler_call_details.method)
