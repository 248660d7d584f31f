"""One implementation, two transports: the gRPC method handlers, served over HTTP.

`registry.HandlerRegistry` stands in for the grpc.aio server while the generated
`add_*Servicer_to_server` functions register the servicers: it passes every handler on to the
real server and keeps a copy. `connect_endpoints` turns those same handlers into connectrpc
endpoints. Each HTTP call goes through the gRPC server's own interceptor chain (telemetry,
access log, draining, auth, rate limits, error mapping) and then the servicer method, with an
`HttpServicerContext`; the status it aborts with becomes the Connect error. Nothing about a
method is written twice, so an RPC added to a .proto and a servicer is served over HTTP too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import Endpoint
from google.protobuf import descriptor_pool, message_factory

from agentrun.server.errors import to_status
from agentrun.server.http.context import CONNECT_CODES, HttpServicerContext
from agentrun.server.http.details import connect_details

Resolve = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]
# A handler's behaviour as the aio server has it (a coroutine function or an async generator
# function), called here with an HttpServicerContext in the grpc context's place.
AioBehavior = Callable[[Any, HttpServicerContext], Any]


@dataclass(slots=True)
class CallDetails:
    """grpc.HandlerCallDetails for an HTTP call."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


def interceptor_chain(
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
    interceptors: Sequence[grpc.aio.ServerInterceptor],
) -> Resolve:
    """The handler a call runs, wrapped by `interceptors` as grpc.aio wraps it (the first
    interceptor is the outermost)."""

    async def lookup(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return handlers.get(details.method)

    resolve: Resolve = lookup
    for interceptor in reversed(interceptors):
        resolve = functools.partial(interceptor.intercept_service, resolve)
    return resolve


def connect_endpoints(
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
    interceptors: Sequence[grpc.aio.ServerInterceptor],
) -> dict[str, Endpoint[Any, Any]]:
    """A connectrpc endpoint for every unary and server-streaming method handler."""
    resolve = interceptor_chain(handlers, interceptors)
    pool = descriptor_pool.Default()
    endpoints: dict[str, Endpoint[Any, Any]] = {}
    for path, handler in handlers.items():
        if handler.request_streaming:
            continue  # WorkerService.Connect streams requests: Connect over HTTP/1.1 cannot
        service_name, _, name = path.lstrip("/").rpartition("/")
        method = pool.FindServiceByName(service_name).methods_by_name[name]
        info = MethodInfo(
            name=name,
            service_name=service_name,
            input=message_factory.GetMessageClass(method.input_type),
            output=message_factory.GetMessageClass(method.output_type),
            idempotency_level=IdempotencyLevel.UNKNOWN,
            stream_type=StreamType.SERVER_STREAM
            if handler.response_streaming
            else StreamType.UNARY,
        )
        if handler.response_streaming:
            endpoints[path] = Endpoint.server_stream(
                method=info, function=_server_stream(path, resolve)
            )
        else:
            endpoints[path] = Endpoint.unary(method=info, function=_unary(path, resolve))
    return endpoints


def _unary(path: str, resolve: Resolve) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        context = HttpServicerContext(ctx)
        try:
            handler = await _handler(path, resolve, context)
            response = await _behavior(handler, "unary_unary")(request, context)
        except grpc.aio.AbortError:
            raise context.to_connect_error() from None
        except (ConnectError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _error(exc) from None
        _check_code(context)
        return response

    return call


def _server_stream(path: str, resolve: Resolve) -> Callable[..., AsyncIterator[Any]]:
    async def stream(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        context = HttpServicerContext(ctx)
        try:
            handler = await _handler(path, resolve, context)
            behavior = _behavior(handler, "unary_stream")
            responses: AsyncIterator[Any]
            if inspect.isasyncgenfunction(behavior):
                responses = behavior(request, context)
            else:  # a coroutine that sends with `await context.write(...)`
                responses = _written(behavior, request, context)
            async for response in responses:
                yield response
        except grpc.aio.AbortError:
            raise context.to_connect_error() from None
        except (ConnectError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _error(exc) from None
        _check_code(context)

    return stream


async def _written(
    behavior: AioBehavior, request: Any, context: HttpServicerContext
) -> AsyncIterator[Any]:
    """The messages a write-style streaming servicer sends, one at a time (it waits in
    `write` until the previous one is taken: the client's pace, as over HTTP/2)."""
    writes: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    context.writes = writes
    task = asyncio.ensure_future(behavior(request, context))
    try:
        while True:
            taken = asyncio.ensure_future(writes.get())
            await asyncio.wait((taken, task), return_when=asyncio.FIRST_COMPLETED)
            if taken.done():
                yield taken.result()
                continue
            taken.cancel()
            while not writes.empty():
                yield writes.get_nowait()
            task.result()  # its abort or error, if any
            return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _handler(
    path: str, resolve: Resolve, context: HttpServicerContext
) -> grpc.RpcMethodHandler[Any, Any]:
    handler = await resolve(CallDetails(path, context.invocation_metadata()))
    if handler is None:  # an interceptor refused it without aborting
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not served")
    return handler


def _behavior(handler: grpc.RpcMethodHandler[Any, Any], kind: str) -> AioBehavior:
    """The handler's behaviour of this kind (`unary_unary`, ...): grpc's stubs type it as the
    blocking server's, but every handler here is the aio server's."""
    behavior: AioBehavior = getattr(handler, kind)
    return behavior


def _check_code(context: HttpServicerContext) -> None:
    """A servicer that set a non-OK code without aborting ends the call with it, as in gRPC."""
    code = context.code()
    if code is not None and code is not grpc.StatusCode.OK:
        raise context.to_connect_error()


def _error(exc: BaseException) -> ConnectError:
    """An exception no interceptor mapped (methods outside agentrun.v1, such as Health):
    UNIMPLEMENTED for NotImplementedError, as grpc.aio sends; else INTERNAL, logged."""
    if isinstance(exc, NotImplementedError):
        return ConnectError(
            CONNECT_CODES[grpc.StatusCode.UNIMPLEMENTED],
            f"Unexpected {type(exc)}: {exc}",
        )
    status = to_status(exc)
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    return ConnectError(CONNECT_CODES[code], status.message, connect_details(status.details))
