"""Builds the grpc.aio server around an engine, and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from agentrun.server._wrap import CachingInterceptor, wrapping
from agentrun.server.auth import AuthInterceptor
from agentrun.server.config import ConfigError, ServerConfig
from agentrun.server.execution_service import ExecutionService
from agentrun.server.http.registry import HandlerRegistry
from agentrun.server.interceptors import (
    CallEndInterceptor,
    DrainInterceptor,
    ErrorInterceptor,
    Lifecycle,
)
from agentrun.server.observability import Observability
from agentrun.server.ratelimit import RateLimitInterceptor
from agentrun.server.reflection import enable_reflection
from agentrun.server.workflow_service import WorkflowService
from agentrun.v1 import execution_service_pb2, workflow_service_pb2
from agentrun.v1 import execution_service_pb2_grpc as execution_grpc
from agentrun.v1 import workflow_service_pb2_grpc as workflow_grpc

if TYPE_CHECKING:
    from agentrun.engine import Engine
    from agentrun.integrations.workers import Workers

log = logging.getLogger("agentrun.server")

SERVICE_NAMES = (
    workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
)


class AgentrunServer:
    """The gRPC server: agentrun services, health, reflection, interceptors and limits.

    It does not own the engine: `serve()` builds both and stops them in order.
    """

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig | None = None,
        *,
        observability: Observability | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.workers = workers
        self.engine = engine
        self.observability = observability
        self.lifecycle = Lifecycle()
        self.health = health_aio.HealthServicer()
        interceptors: list[CachingInterceptor] = []
        # Outermost: RPC spans and metrics see every call, refused ones too.
        telemetry = observability.interceptor() if observability is not None else None
        if telemetry is not None:
            interceptors.append(telemetry)
        interceptors.append(CallEndInterceptor(access_log=self.config.access_log))
        interceptors.append(DrainInterceptor(self.lifecycle))
        if self.config.auth_enabled:
            interceptors.append(AuthInterceptor(self.config.api_keys))
            if self.config.rate_limit > 0 or any(k.rate for k in self.config.api_keys):
                interceptors.append(
                    RateLimitInterceptor(rate=self.config.rate_limit, burst=self.config.rate_burst)
                )
        interceptors.append(ErrorInterceptor())
        # Applied to each handler once, as it is registered (not given to grpc.aio, which
        # would run each one's intercept_service on every call); the HTTP port serves the
        # same wrapped handlers.
        self.interceptors = tuple(interceptors)
        self.server = grpc.aio.server(
            options=self.config.grpc_options(),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        # Registers on the gRPC server and keeps the handlers for the HTTP port.
        self.registry = HandlerRegistry(self.server, wrapping(interceptors))
        workflow_grpc.add_WorkflowServiceServicer_to_server(WorkflowService(engine), self.registry)
        execution_grpc.add_ExecutionServiceServicer_to_server(
            ExecutionService(
                engine,
                self.lifecycle,
                max_response_bytes=self.config.max_send_message_bytes,
                workers=workers,
                tracing=observability is not None and observability.tracing,
            ),
            self.registry,
        )
        self.service_names = list(SERVICE_NAMES)
        if engine.machines is not None:
            from agentrun.server.state_machine_service import StateMachineService
            from agentrun.v1 import state_machine_service_pb2
            from agentrun.v1 import state_machine_service_pb2_grpc as machine_grpc

            machine_grpc.add_StateMachineServiceServicer_to_server(
                StateMachineService(engine.machines, self.lifecycle), self.registry
            )
            self.service_names.append(
                state_machine_service_pb2.DESCRIPTOR.services_by_name[
                    "StateMachineService"
                ].full_name
            )
        if workers is not None:
            from agentrun.server.worker_service import WorkerService
            from agentrun.v1 import worker_service_pb2
            from agentrun.v1 import worker_service_pb2_grpc as worker_grpc

            worker_grpc.add_WorkerServiceServicer_to_server(
                WorkerService(workers, self.lifecycle), cast("grpc.aio.Server", self.registry)
            )
            self.service_names.append(
                worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
            )
        # The registry stands in for the server: the function calls only its add_* methods.
        health_pb2_grpc.add_HealthServicer_to_server(
            self.health, cast("grpc.aio.Server", self.registry)
        )
        if self.config.reflection:
            health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
            enable_reflection(
                cast("grpc.aio.Server", self.registry), (*self.service_names, health_name)
            )
        self.port = 0

    def bind(self, listen: str | None = None) -> int:
        """Takes the port (before `serve` opens the store, so that a second server on a
        busy port stops before it recovers anything); returns it. OSError if it cannot."""
        address = listen or self.config.listen
        busy = f"{address} is already in use (another agentrun serve?)"
        # Asked first with a plain socket, so a busy port gets this one line and not also
        # gRPC's own log of the failed bind.
        if port_in_use(address):
            raise OSError(busy)
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0
            self.port = 0
        if not self.port:
            raise OSError(busy if port_in_use(address) else f"cannot listen on {address}")
        self._address = address
        return self.port

    async def start(self, listen: str | None = None) -> int:
        """Binds (unless `bind` did) and starts serving; returns the port (useful with
        `127.0.0.1:0`)."""
        if not self.port:
            self.bind(listen)
        address = getattr(self, "_address", listen or self.config.listen)
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if not self.config.auth_enabled:
            log.warning("auth is off: no API keys configured; every caller is tenant 'default'")
        log.info("agentrun serving on %s (port %d)", address, self.port)
        return self.port

    async def drain(self) -> None:
        """Health NOT_SERVING; new calls get UNAVAILABLE; watch streams end resumably;
        connected workers get no more calls (their answers still count)."""
        await self.health.enter_graceful_shutdown()
        self.lifecycle.draining.set()
        if self.workers is not None:
            self.workers.drain()

    async def stop(self, grace: float | None = None) -> None:
        """Drains, then waits up to `grace` seconds for calls in flight."""
        if not self.lifecycle.is_draining:
            await self.drain()
        await self.server.stop(self.config.shutdown_grace if grace is None else grace)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def port_in_use(address: str) -> bool:
    """Whether a listening socket already holds `address` (HOST:PORT; port 0 never is)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or int(port) == 0:
        return False
    try:
        infos = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port left in TIME_WAIT by a stopped server is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


async def serve(config: ServerConfig, *, ready: asyncio.Event | None = None) -> None:
    """Opens the store, starts the engine (recovering unfinished executions) and the server,
    and runs until SIGTERM or SIGINT, then shuts down within `config.shutdown_grace`."""
    from agentrun.engine import Engine
    from agentrun.engine import limits as data_limits
    from agentrun.engine.tuning import tune_gc
    from agentrun.integrations import attach, default_agents, default_tools
    from agentrun.integrations.workers import Workers, WorkersConfig
    from agentrun.storage.factory import make_store

    engine_config = config.engine_config()  # ConfigError before anything is opened
    # One engine for executions and state machine instances, in the same store: it builds,
    # starts and stops its MachineEngine, and the server registers every service from it.
    engine_config.state_machines = True
    data_limits.configure(config.data_limits)
    try:
        workers_config = WorkersConfig.from_mapping(config.integrations.get("workers"))
        tools = default_tools(config.integrations)
        agents = default_agents(config.integrations, tools=tools)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    observability = Observability.from_config(config)
    engine_config.instrumentation = observability.instrumentation()
    store = make_store(config.database_url, lease_seconds=engine_config.lease_seconds)
    engine: Any = None
    workers: Workers | None = None
    server: AgentrunServer | None = None
    http: Any = None
    publisher: Any = None
    opened = False
    try:
        engine = Engine(store, tools=tools, agents=agents, config=engine_config)
        # Tools served by remote workers (WorkerService), installed in the engine's registry.
        workers = Workers(store, tools, replica=engine.replica_id, config=workers_config)
        server = AgentrunServer(engine, config, observability=observability, workers=workers)
        # The port first: a second server on a busy port must fail before it opens the
        # store, let alone claims and resumes executions.
        server.bind()
        if config.http_listen:
            from agentrun.server.http.server import HttpServer

            http = HttpServer(server)
            http.bind()
        await store.open()
        opened = True
        observability.attach(engine)
        port = observability.start()
        if port is not None:
            log.info("metrics on http://%s:%d/metrics", config.metrics_host, port)
        # Event bus and log redaction first, so recovered executions' events are published.
        publisher = await attach(engine, config.integrations)
        tune_gc()
        await workers.start()  # remote tools known before executions resume
        await engine.start()  # executions, then instances
        await server.start()
        if http is not None:
            await http.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down (grace %.1fs)", config.shutdown_grace)
        await server.drain()
        deadline = loop.time() + config.shutdown_grace
        await engine.stop(grace=config.shutdown_grace)  # executions, then instances
        if http is not None:
            await http.stop(max(0.5, deadline - loop.time()))
        await server.stop(max(0.5, deadline - loop.time()))
    finally:
        if http is not None:
            with contextlib.suppress(Exception):
                await http.stop(0)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.server.stop(0)
        if engine is not None and opened:
            with contextlib.suppress(Exception):
                await engine.stop(grace=0)
            if workers is not None:
                with contextlib.suppress(Exception):
                    await workers.stop()
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.stop()
        await tools.aclose()  # MCP sessions (stdio servers stop)
        observability.close()
        if opened:
            await store.close()
            log.info("stopped")
