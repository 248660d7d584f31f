"""The method handlers a grpc.aio server serves, kept for the HTTP port.

The services' handlers reach grpc.aio through one generic handler that finds a call's method
in a dict (`_ByMethod`), not as registered methods: grpc.aio keeps one pending request per
registered method and, for every call it accepts, waits on all of them (`asyncio.wait` over
~36 futures: a done callback added and removed on each, ~1,000 Python calls per
StartExecution where the generic way needs one future).

This module imports nothing of the HTTP stack, so the gRPC server loads no more than before
when the HTTP port is off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from agentrun.server._wrap import Wrap, WrappedGenericHandler


class HandlerRegistry:
    """Records the method handlers registered on a grpc.aio server (and registers them),
    each wrapped by `wrap` (the server's interceptors, applied once here rather than by
    grpc.aio on every call); `handlers` holds them as served."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap | None = None) -> None:
        self._server = server
        self._wrap = wrap
        # "/package.Service/Method" -> handler
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # First of the generic handlers, so that it answers every method registered here
        # (the generated code adds a generic handler of its own for each service as well).
        server.add_generic_rpc_handlers((_ByMethod(self.handlers),))

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        wrap = self._wrap
        if wrap is not None:
            handlers = [WrappedGenericHandler(h, wrap) for h in handlers]
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        wrap = self._wrap
        if wrap is not None:
            handlers = {name: wrap(h, f"/{service}/{name}") for name, h in handlers.items()}
        # Served through `_ByMethod`, not given to grpc.aio as registered methods (module doc).
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class _ByMethod(grpc.GenericRpcHandler):
    """The registry's handlers by method name: one dict lookup per call."""

    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = handlers

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)
