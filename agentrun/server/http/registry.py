"""The method handlers a grpc.aio server serves, kept for the HTTP port.

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
        self._server.add_registered_method_handlers(service, handlers)
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler
