"""`Worker`: serves tool functions to agentrun servers over WorkerService's Connect stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from agentrun.v1 import worker_service_pb2 as pb
from agentrun.v1 import worker_service_pb2_grpc as pb_grpc
from agentrun.worker._types import Call, ToolDefinition, ToolError, from_value, to_value

log = logging.getLogger("agentrun.worker")

F = TypeVar("F", bound=Callable[..., Any])

# Stream failures after which the worker connects again (the server restarted or drained).
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class WorkerRefused(Exception):
    """The server refused the worker (a bad registration, a bad key): connecting again would
    not help. `code` is the gRPC status, `details` its message (naming the field)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(slots=True)
class WorkerStats:
    """What the worker did, for tests and dashboards."""

    calls: int = 0
    results: int = 0
    errors: int = 0
    # Answers the server refused (the lease had moved): never applied.
    refused: int = 0
    cancelled: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    sessions: int = 0


class Worker:
    """Tools in this process, served to agentrun (docs/workers.md).

        worker = Worker("127.0.0.1:50051", max_concurrent_calls=4, labels={"region": "eu"})

        @worker.tool("billing.refund", args_schema={...}, idempotent=True)
        async def refund(args: dict, call: Call) -> dict: ...

        worker.run_forever()      # until SIGTERM/SIGINT, then drains

    `target` is one address or several (replicas: tried in turn when a connection breaks).
    Tool functions take `(args)` or `(args, call)`, async or not (a sync one runs in a
    thread); they return any JSON value or raise ToolError.
    """

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        *,
        api_key: str | None = None,
        max_concurrent_calls: int = 4,
        labels: Mapping[str, str] | None = None,
        display_name: str | None = None,
        version: str = "",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        targets = [target] if isinstance(target, str) else list(target or [])
        self.targets = targets or [os.environ.get("AGENTRUN_ADDRESS") or "127.0.0.1:50051"]
        key = api_key if api_key is not None else os.environ.get("AGENTRUN_API_KEY")
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.max_concurrent_calls = max_concurrent_calls
        self.labels = dict(labels or {})
        self.display_name = display_name or f"{socket.gethostname()}:{os.getpid()}"
        self.version = version
        self._credentials = credentials
        self._tools: dict[str, ToolDefinition] = {}
        self.stats = WorkerStats()
        # `workers/{id}` of the current session ("" while not connected).
        self.name = ""
        self.connected = asyncio.Event()
        self._draining = False
        self._stopped = False
        self._out: asyncio.Queue[pb.ConnectRequest | None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._calls: dict[str, Call] = {}
        self._idle = asyncio.Event()

    # Tools ----------------------------------------------------------------------------------
    def tool(
        self,
        name: str,
        *,
        description: str = "",
        args_schema: Mapping[str, Any] | None = None,
        result_schema: Mapping[str, Any] | None = None,
        irreversible: bool = False,
        idempotent: bool = False,
        max_concurrent_calls: int = 0,
        version: str = "",
    ) -> Callable[[F], F]:
        """Decorator: serves `fn` as the tool `name` (its docstring is the default description)."""

        def register(fn: F) -> F:
            self.add_tool(
                ToolDefinition(
                    name=name,
                    fn=fn,
                    description=description or (fn.__doc__ or "").strip(),
                    args_schema=args_schema,
                    result_schema=result_schema,
                    irreversible=irreversible,
                    idempotent=idempotent,
                    max_concurrent_calls=max_concurrent_calls,
                    version=version,
                )
            )
            return fn

        return register

    def add_tool(self, definition: ToolDefinition) -> None:
        if definition.name in self._tools:
            raise ValueError(f"tool {definition.name!r} is defined twice")
        self._tools[definition.name] = definition

    def _registration(self) -> pb.RegisterWorker:
        message = pb.RegisterWorker(
            display_name=self.display_name,
            max_concurrent_calls=self.max_concurrent_calls,
            labels=self.labels,
            version=self.version,
        )
        for t in self._tools.values():
            tool = message.tools.add(
                name=t.name,
                description=t.description,
                irreversible=t.irreversible,
                idempotent=t.idempotent,
                max_concurrent_calls=t.max_concurrent_calls,
                version=t.version,
            )
            if t.args_schema is not None:
                tool.args_schema.CopyFrom(to_value(dict(t.args_schema)).struct_value)
            if t.result_schema is not None:
                tool.result_schema.CopyFrom(to_value(dict(t.result_schema)).struct_value)
        return message

    # Running --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serves until `drain()` or `stop()`; connects again (to the next target) when the
        stream breaks. WorkerRefused when the server refuses the registration or the key."""
        delay, turn = 0.1, 0
        while not self._stopped and not self._draining:
            target = self.targets[turn % len(self.targets)]
            turn += 1
            try:
                await self._session(target)
                delay = 0.1
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _TRANSIENT:
                    raise WorkerRefused(exc.code(), exc.details() or "") from None
                log.info(
                    "worker stream to %s ended (%s); connecting again", target, exc.code().name
                )
            if self._stopped or self._draining:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def drain(self, grace: float = 30.0) -> None:
        """Asks for no more calls, lets the running ones answer (up to `grace` seconds), then
        closes the stream: what SIGTERM does under `run_forever`."""
        self._draining = True
        out = self._out
        if out is not None:
            out.put_nowait(pb.ConnectRequest(drain=pb.DrainWorker()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while self._running:
                        self._idle.clear()
                        await self._idle.wait()
            out.put_nowait(None)

    def stop(self) -> None:
        """Ends the stream now; calls running are abandoned (the server retries them elsewhere)."""
        self._stopped = True
        if self._out is not None:
            self._out.put_nowait(None)

    def run_forever(self) -> None:
        """`run()` in a new event loop, draining on SIGTERM or SIGINT."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: loop.create_task(self.drain()))
            await self.run()

        asyncio.run(main())

    # One stream -----------------------------------------------------------------------------
    def _channel(self, target: str) -> grpc.aio.Channel:
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
        if self._credentials is not None:
            return grpc.aio.secure_channel(target, self._credentials, options=options)
        return grpc.aio.insecure_channel(target, options=options)

    async def _session(self, target: str) -> None:
        out: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        out.put_nowait(pb.ConnectRequest(register=self._registration()))
        self._out = out
        heartbeats: asyncio.Task[None] | None = None

        async def requests() -> AsyncIterator[pb.ConnectRequest]:
            while (message := await out.get()) is not None:
                yield message

        async with self._channel(target) as channel:
            stream = pb_grpc.WorkerServiceStub(channel).Connect(requests(), metadata=self._metadata)
            try:
                async for response in stream:
                    kind = response.WhichOneof("kind")
                    if kind == "registered":
                        self.name = response.registered.name
                        self.stats.sessions += 1
                        interval = (
                            response.registered.heartbeat_interval.ToNanoseconds() / 1e9 or 1.0
                        )
                        heartbeats = asyncio.ensure_future(self._heartbeats(out, interval))
                        self.connected.set()
                        if self._draining:
                            out.put_nowait(pb.ConnectRequest(drain=pb.DrainWorker()))
                    elif kind == "call":
                        self._start(response.call, out)
                    elif kind == "cancel":
                        self._cancel(response.cancel.call_id)
                    elif kind == "refused":
                        self.stats.refused += 1
                        log.warning(
                            "the server refused the answer to %s (%s)",
                            response.refused.call_id,
                            response.refused.reason,
                        )
            finally:
                self.connected.clear()
                self._out = None
                if heartbeats is not None:
                    heartbeats.cancel()
                for task in list(self._running.values()):  # their leases are gone with the stream
                    task.cancel()
                self._running.clear()
                self._calls.clear()
                self._idle.set()

    async def _heartbeats(
        self, out: asyncio.Queue[pb.ConnectRequest | None], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval / 2)
            out.put_nowait(pb.ConnectRequest(heartbeat=pb.WorkerHeartbeat()))

    def _start(self, message: pb.WorkerCall, out: asyncio.Queue[pb.ConnectRequest | None]) -> None:
        def report(call_id: str, progress: float, total: float | None, text: str | None) -> None:
            out.put_nowait(
                pb.ConnectRequest(
                    progress=pb.WorkerCallProgress(
                        call_id=call_id, progress=progress, total=total or 0, message=text or ""
                    )
                )
            )

        call = Call(
            call_id=message.call_id,
            tool=message.tool,
            execution_id=message.execution_id,
            node_id=message.node_id,
            attempt=message.attempt,
            idempotency_key=message.idempotency_key,
            deadline=message.deadline.ToNanoseconds() / 1e9
            if message.HasField("deadline")
            else None,
            traceparent=message.traceparent,
            labels=dict(message.labels),
            _report=report,
        )
        self.stats.calls += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        self._calls[call.call_id] = call
        task = asyncio.ensure_future(self._answer(call, from_value(message.arguments), out))
        self._running[call.call_id] = task

    def _cancel(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        task = self._running.get(call_id)
        if call is None or task is None:
            return
        call.cancelled.set()
        self.stats.cancelled += 1
        if self._tools.get(call.tool) is not None and self._tools[call.tool].is_async:
            task.cancel()

    async def _answer(
        self, call: Call, args: Any, out: asyncio.Queue[pb.ConnectRequest | None]
    ) -> None:
        result = pb.WorkerCallResult(call_id=call.call_id)
        try:
            definition = self._tools.get(call.tool)
            if definition is None:
                raise ToolError(
                    "unknown_tool", f"this worker does not serve {call.tool!r}", retryable=True
                )
            value = await definition.run(args, call)
            try:
                result.result.CopyFrom(to_value(value))
            except (TypeError, ValueError) as exc:
                raise ToolError(
                    "invalid_output", f"the result is not JSON: {exc}", retryable=False
                ) from None
            self.stats.results += 1
        except asyncio.CancelledError:
            if not call.cancelled.is_set():
                raise  # the stream ended: nobody to answer
            _set_error(result, ToolError("cancelled", "the call was withdrawn", retryable=False))
        except ToolError as exc:
            _set_error(result, exc)
        except Exception as exc:
            log.exception("tool %s failed", call.tool)
            _set_error(result, ToolError("tool_error", f"{type(exc).__name__}: {exc}"))
        finally:
            self.stats.in_flight -= 1
            self._running.pop(call.call_id, None)
            self._calls.pop(call.call_id, None)
            if not self._running:
                self._idle.set()
        if result.HasField("error"):
            self.stats.errors += 1
        out.put_nowait(pb.ConnectRequest(result=result))


def _set_error(result: pb.WorkerCallResult, error: ToolError) -> None:
    result.error.type = error.type
    result.error.message = error.message
    result.error.retryable = error.retryable
    if error.retry_after is not None:
        result.error.retry_after.FromNanoseconds(round(error.retry_after * 1e9))
    if error.details:
        result.error.details.CopyFrom(to_value(error.details).struct_value)
