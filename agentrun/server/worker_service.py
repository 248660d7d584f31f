"""WorkerService: a worker's stream and ListWorkers, thin adapters over `Workers.hub`
(agentrun/integrations/workers): messages in become hub calls, the session's outbox becomes
messages out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentrun.integrations.workers import Cancel, Refused, Registration, Session, ToolSpec, Workers
from agentrun.server import convert, requests
from agentrun.server.auth import current_tenant
from agentrun.server.errors import invalid_argument
from agentrun.server.interceptors import Lifecycle
from agentrun.storage.worker_calls import CallRecord, WorkerRecord
from agentrun.v1 import worker_service_pb2 as pb
from agentrun.v1 import worker_service_pb2_grpc as pb_grpc

log = logging.getLogger("agentrun.server")

_STATES = {
    "SERVING": pb.Worker.STATE_SERVING,
    "DRAINING": pb.Worker.STATE_DRAINING,
    "UNRESPONSIVE": pb.Worker.STATE_UNRESPONSIVE,
}


class WorkerService(pb_grpc.WorkerServiceServicer):
    def __init__(self, workers: Workers, lifecycle: Lifecycle | None = None) -> None:
        self._workers = workers
        self._lifecycle = lifecycle or Lifecycle()

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.ConnectRequest],
        context: grpc.aio.ServicerContext[pb.ConnectRequest, pb.ConnectResponse],
    ) -> AsyncIterator[pb.ConnectResponse]:
        hub = self._workers.hub
        requests_in = aiter(request_iterator)
        try:
            first = await anext(requests_in)
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "register":
            raise invalid_argument(
                "register", "the first message of a worker's stream must be `register`"
            )
        session = await hub.open(current_tenant(), registration_from_proto(first.register))
        config = self._workers.config
        registered = pb.WorkerRegistered(name=session.name)
        registered.heartbeat_interval.FromNanoseconds(round(config.heartbeat * 1e9))
        registered.lease_duration.FromNanoseconds(round(config.lease * 1e9))
        reader = asyncio.ensure_future(self._read(requests_in, session))
        try:
            yield pb.ConnectResponse(registered=registered)
            while True:
                item = await session.next()
                if item is None:
                    break
                yield _outgoing(item)
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            reader.cancel()
            # Shielded: a stream cancelled by its client still hands its calls back.
            closing = asyncio.ensure_future(hub.close(session))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)

    async def _read(self, requests_in: AsyncIterator[pb.ConnectRequest], session: Session) -> None:
        """The worker's messages, until it closes its side (or breaks the rules: the stream
        then ends with INVALID_ARGUMENT)."""
        hub = self._workers.hub
        try:
            async for message in requests_in:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    await _answer(hub, session, message.result)
                elif kind == "heartbeat":
                    await hub.heartbeat(session)
                elif kind == "progress":
                    p = message.progress
                    data = {
                        "progress": p.progress,
                        "total": p.total or None,
                        "message": p.message or None,
                    }
                    await hub.progress(session, p.call_id, data)
                elif kind == "drain":
                    await hub.stop_sending(session)
                elif kind == "register":
                    raise invalid_argument(
                        "register", "a stream registers once, with its first message"
                    )
                else:
                    raise invalid_argument(
                        "kind", "empty message: set register, result, heartbeat, progress or drain"
                    )
        finally:
            session.outbox.put_nowait(None)

    async def ListWorkers(
        self,
        request: pb.ListWorkersRequest,
        context: grpc.aio.ServicerContext[pb.ListWorkersRequest, pb.ListWorkersResponse],
    ) -> pb.ListWorkersResponse:
        tool = _tool_filter(request.filter)
        size = requests.page_size(request.page_size)
        after = requests.decode_token(request.page_token, "workers", request.filter)
        repo = self._workers.repo
        now = self._workers.hub.clock()
        found: list[WorkerRecord] = []
        cursor = after
        while len(found) <= size:
            page = await repo.list_workers(
                current_tenant(),
                seen_after=now - 2 * self._workers.config.lease,
                limit=size + 1,
                after_id=cursor,
            )
            found += [
                w for w in page if tool is None or any(t.get("name") == tool for t in w.tools)
            ]
            if len(page) <= size:
                break
            cursor = page[-1].id
        more = len(found) > size
        found = found[:size]
        load = await repo.active_calls([w.id for w in found])
        response = pb.ListWorkersResponse(
            workers=[worker_to_proto(w, load.get(w.id, 0)) for w in found]
        )
        if more:
            response.next_page_token = requests.encode_token(
                "workers", found[-1].id, request.filter
            )
        return response


async def _answer(hub: Any, session: Session, result: pb.WorkerCallResult) -> None:
    if not result.call_id:
        raise invalid_argument("result.call_id", "is required")
    outcome = result.WhichOneof("outcome")
    if outcome == "result":
        await hub.result(session, result.call_id, result=convert.from_value(result.result))
    elif outcome == "error":
        e = result.error
        error: dict[str, Any] = {
            "type": e.type or "tool_error",
            "message": e.message,
            "details": convert.from_struct(e.details),
        }
        if not e.retryable:
            error["retryable"] = False
        if e.HasField("retry_after"):
            error["retry_after"] = e.retry_after.ToNanoseconds() / 1e9
        await hub.result(session, result.call_id, error=error)
    else:
        raise invalid_argument("result", "set `result` or `error`")


def _tool_filter(text: str) -> str | None:
    if not text.strip():
        return None
    clauses = requests.filter_clauses(text, ("tool",))
    if len(clauses) != 1 or len(clauses[0][1]) != 1:
        raise invalid_argument("filter", 'use tool = "NAME"')
    return clauses[0][1][0]


def registration_from_proto(message: pb.RegisterWorker) -> Registration:
    return Registration(
        tools=tuple(
            ToolSpec(
                name=t.name,
                description=t.description,
                args_schema=convert.from_struct(t.args_schema)
                if t.HasField("args_schema")
                else None,
                result_schema=convert.from_struct(t.result_schema)
                if t.HasField("result_schema")
                else None,
                irreversible=t.irreversible,
                idempotent=t.idempotent,
                max_concurrent_calls=t.max_concurrent_calls,
                version=t.version,
            )
            for t in message.tools
        ),
        max_concurrent_calls=message.max_concurrent_calls,
        labels=dict(message.labels),
        display_name=message.display_name,
        version=message.version,
    )


def tool_to_proto(tool: dict[str, Any]) -> pb.WorkerTool:
    message = pb.WorkerTool(
        name=str(tool.get("name") or ""),
        description=str(tool.get("description") or ""),
        irreversible=bool(tool.get("irreversible")),
        idempotent=bool(tool.get("idempotent")),
        max_concurrent_calls=int(tool.get("max_concurrent_calls") or 0),
        version=str(tool.get("version") or ""),
    )
    convert.set_struct(message.args_schema, tool.get("args_schema"))
    convert.set_struct(message.result_schema, tool.get("result_schema"))
    return message


def worker_to_proto(worker: WorkerRecord, active: int) -> pb.Worker:
    message = pb.Worker(
        name=f"workers/{worker.id}",
        display_name=worker.display_name,
        state=_STATES.get(worker.state, pb.Worker.STATE_UNSPECIFIED),
        tools=[tool_to_proto(t) for t in worker.tools],
        labels=worker.labels,
        version=worker.version,
        max_concurrent_calls=worker.slots,
        active_calls=active,
        replica=worker.replica,
    )
    convert.set_time(message.connect_time, worker.connected_at)
    convert.set_time(message.heartbeat_time, worker.heartbeat_at)
    return message


def call_to_proto(call: CallRecord) -> pb.WorkerCall:
    message = pb.WorkerCall(
        call_id=call.id,
        tool=call.tool,
        execution_id=call.execution_id,
        node_id=call.node_id,
        attempt=call.attempt,
        idempotency_key=call.idempotency_key,
        traceparent=(call.trace or {}).get("traceparent", ""),
        tracestate=(call.trace or {}).get("tracestate", ""),
        labels=call.labels,
    )
    convert.set_value(message.arguments, call.args)
    convert.set_time(message.deadline, call.deadline)
    return message


def _outgoing(item: CallRecord | Cancel | Refused) -> pb.ConnectResponse:
    if isinstance(item, Cancel):
        return pb.ConnectResponse(
            cancel=pb.WorkerCallCancelled(call_id=item.call_id, reason=item.reason)
        )
    if isinstance(item, Refused):
        return pb.ConnectResponse(
            refused=pb.WorkerResultRefused(call_id=item.call_id, reason=item.reason)
        )
    return pb.ConnectResponse(call=call_to_proto(item))
