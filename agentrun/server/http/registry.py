"""The method handlers a grpc.aio server serves, kept for the HTTP port.

This module imports nothing of the HTTP stack, so the gRPC server loads no more than before
when the HTTP port is off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc


class HandlerRegistry:
    """Records the method handlers registered on a grpc.aio server (and registers them)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        # "/package.Service/Method" -> handler
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._server.add_registered_method_handlers(service, handlers)
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler
