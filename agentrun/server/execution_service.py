"""ExecutionService: thin adapters from requests to the engine and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from agentrun.server import convert, requests
from agentrun.server.auth import current_tenant
from agentrun.server.errors import ApiError, invalid_argument
from agentrun.server.interceptors import Lifecycle
from agentrun.server.observability import context as trace_context
from agentrun.server.observability import trace_view
from agentrun.server.streams import until_stopped
from agentrun.v1 import execution_service_pb2 as pb
from agentrun.v1 import execution_service_pb2_grpc as pb_grpc

# How far ahead of the call's deadline a StartExecution with `wait` answers: this share of the
# time the call had left when the wait began, at most _DEADLINE_MARGIN_MAX seconds. The answer
# still has a read and a send to make; a fixed 100 ms was overrun whenever the server's process
# stalled that long (a loaded machine), and the client then got DEADLINE_EXCEEDED instead of
# its execution, losing the id. (Temporal's frontend keeps a second of tail room so.)
_DEADLINE_SHARE = 0.2
_DEADLINE_MARGIN_MAX = 1.0

_ACTIONS = {
    pb.ControlExecutionsRequest.ACTION_PAUSE: "pause",
    pb.ControlExecutionsRequest.ACTION_RESUME: "resume",
    pb.ControlExecutionsRequest.ACTION_CANCEL: "cancel",
}

if TYPE_CHECKING:
    from agentrun.engine import Engine
    from agentrun.integrations.workers import Workers
    from agentrun.storage.records import ExecutionRecord


class ExecutionService(pb_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        engine: Engine,
        lifecycle: Lifecycle | None = None,
        *,
        max_response_bytes: int = 64 * 1024 * 1024,
        workers: Workers | None = None,
        tracing: bool | None = None,
    ) -> None:
        """`tracing`: whether the server makes RPC spans (False: a new execution's
        traceparent is the caller's, without asking OpenTelemetry; None: ask it)."""
        self._engine = engine
        self._tracing = tracing
        self._workers = workers
        self._lifecycle = lifecycle or Lifecycle()
        # One event must fit in a message with room to spare; a page of events too.
        self._max_event_bytes = max(1024, max_response_bytes - 1024 * 1024)
        self._max_page_bytes = max(1024, max_response_bytes // 2)

    async def StartExecution(
        self,
        request: pb.StartExecutionRequest,
        context: grpc.aio.ServicerContext[pb.StartExecutionRequest, pb.StartExecutionResponse],
    ) -> pb.StartExecutionResponse:
        name = requests.workflow_name(request.workflow, "workflow")
        if request.version < 0:
            raise invalid_argument("version", "must not be negative")
        wait = requests.start_wait(request)
        tenant = current_tenant()
        record = await self._engine.start_execution(
            name,
            convert.from_value(request.input) if request.HasField("input") else {},
            tenant=tenant,
            version=request.version or None,
            request_id=request.request_id or None,
            priority=request.priority,
            labels=_trace_labels(context, self._tracing),
        )
        if wait is not None and not record.state.terminal:
            record = await self._wait_briefly(record, tenant, wait, context.time_remaining())
        response = pb.StartExecutionResponse()
        convert.set_execution(response.execution, record)
        return response

    async def _wait_briefly(
        self, record: ExecutionRecord, tenant: str, seconds: float, call_left: float | None
    ) -> ExecutionRecord:
        """`wait: true`: the final execution if it ends within `seconds` (and before the
        call's own deadline, answering a little ahead of it so the answer arrives), else the
        execution as it is then, still running."""
        if call_left is not None:
            seconds = min(
                seconds, call_left - min(_DEADLINE_MARGIN_MAX, _DEADLINE_SHARE * call_left)
            )
        if seconds > 0:
            try:
                return await self._engine.wait(record.id, seconds)
            except TimeoutError:
                pass
        return await self._engine.get_execution(record.id, tenant=tenant)

    async def GetExecution(
        self,
        request: pb.GetExecutionRequest,
        context: grpc.aio.ServicerContext[pb.GetExecutionRequest, pb.GetExecutionResponse],
    ) -> pb.GetExecutionResponse:
        ident = requests.execution_id(request.name)
        tenant = current_tenant()
        record = await self._engine.get_execution(ident, tenant=tenant)
        response = pb.GetExecutionResponse(execution=convert.execution_to_proto(record))
        if request.include_nodes:
            nodes = await self._engine.list_nodes(ident, tenant=tenant)
            if self._workers is not None and not record.state.terminal:
                nodes = await self._workers.show_waiting(ident, nodes)
            budget = self._max_page_bytes - response.ByteSize()
            for n in nodes:
                node = convert.node_to_proto(n)
                budget -= node.ByteSize()
                if budget < 0:
                    # Past the answer's budget a node comes without its data (input, output),
                    # which its events (ListExecutionEvents) still carry: the answer stays
                    # deliverable however many large nodes an execution has.
                    budget += node.ByteSize()
                    node.ClearField("input")
                    node.ClearField("output")
                    budget -= node.ByteSize()
                response.nodes.append(node)
        return response

    async def ListExecutions(
        self,
        request: pb.ListExecutionsRequest,
        context: grpc.aio.ServicerContext[pb.ListExecutionsRequest, pb.ListExecutionsResponse],
    ) -> pb.ListExecutionsResponse:
        workflow, states = requests.execution_filter(request.filter)
        created_after, created_before = requests.execution_times(request)
        newest_first = requests.newest_first(request.order)
        size = requests.page_size(request.page_size)
        query = requests.execution_list_query(request)
        after = requests.decode_token(request.page_token, "executions", query)
        records = await self._engine.list_executions(
            tenant=current_tenant(),
            limit=size + 1,
            after_id=after,
            workflow=workflow,
            states=states,
            created_after=created_after,
            created_before=created_before,
            newest_first=newest_first,
        )
        response = pb.ListExecutionsResponse()
        budget = self._max_page_bytes
        sent = 0
        for record in records[:size]:
            execution = convert.execution_to_proto(record)
            budget -= execution.ByteSize()
            if budget < 0 and sent:
                break  # the page is full: the token resumes after the last execution sent
            response.executions.append(execution)
            sent += 1
        if len(records) > sent:
            response.next_page_token = requests.encode_token(
                "executions", records[sent - 1].id, query
            )
        return response

    async def CancelExecution(
        self,
        request: pb.CancelExecutionRequest,
        context: grpc.aio.ServicerContext[pb.CancelExecutionRequest, pb.CancelExecutionResponse],
    ) -> pb.CancelExecutionResponse:
        record = await self._engine.cancel(
            requests.execution_id(request.name),
            tenant=current_tenant(),
            compensate=request.compensate,
        )
        return pb.CancelExecutionResponse(execution=convert.execution_to_proto(record))

    async def PauseExecution(
        self,
        request: pb.PauseExecutionRequest,
        context: grpc.aio.ServicerContext[pb.PauseExecutionRequest, pb.PauseExecutionResponse],
    ) -> pb.PauseExecutionResponse:
        record = await self._engine.pause(
            requests.execution_id(request.name), tenant=current_tenant()
        )
        return pb.PauseExecutionResponse(execution=convert.execution_to_proto(record))

    async def ResumeExecution(
        self,
        request: pb.ResumeExecutionRequest,
        context: grpc.aio.ServicerContext[pb.ResumeExecutionRequest, pb.ResumeExecutionResponse],
    ) -> pb.ResumeExecutionResponse:
        with_args = request.HasField("args")
        record = await self._engine.resume(
            requests.execution_id(request.name),
            tenant=current_tenant(),
            node_id=request.node_id,
            args=convert.from_value(request.args) if with_args else None,
            with_args=with_args,
        )
        return pb.ResumeExecutionResponse(execution=convert.execution_to_proto(record))

    async def ControlExecutions(
        self,
        request: pb.ControlExecutionsRequest,
        context: grpc.aio.ServicerContext[
            pb.ControlExecutionsRequest, pb.ControlExecutionsResponse
        ],
    ) -> pb.ControlExecutionsResponse:
        action = _ACTIONS.get(request.action)
        if action is None:
            raise invalid_argument(
                "action", "required: ACTION_PAUSE, ACTION_RESUME or ACTION_CANCEL"
            )
        if not request.filter.strip():
            raise invalid_argument(
                "filter", 'required (as ListExecutions\', e.g. `workflow = "NAME"`)'
            )
        if request.compensate and action != "cancel":
            raise invalid_argument("compensate", "only with ACTION_CANCEL")
        workflow, states = requests.execution_filter(request.filter)
        query = f"{request.action}:{request.filter}"
        outcomes, after = await self._engine.control_many(
            action,
            tenant=current_tenant(),
            workflow=workflow,
            states=states,
            limit=requests.page_size(request.page_size),
            after_id=requests.decode_token(request.page_token, "executions", query),
            compensate=request.compensate,
        )
        response = pb.ControlExecutionsResponse(
            outcomes=[
                pb.ControlOutcome(
                    execution=f"executions/{o.execution_id}",
                    done=o.done,
                    state=f"STATE_{o.state.value}" if o.state is not None else None,
                    reason=o.reason,
                    message=o.message,
                )
                for o in outcomes
            ]
        )
        if after is not None:
            response.next_page_token = requests.encode_token("executions", after, query)
        return response

    async def SignalExecution(
        self,
        request: pb.SignalExecutionRequest,
        context: grpc.aio.ServicerContext[pb.SignalExecutionRequest, pb.SignalExecutionResponse],
    ) -> pb.SignalExecutionResponse:
        if not request.signal:
            raise invalid_argument("signal", "required")
        record = await self._engine.signal(
            requests.execution_id(request.name),
            request.signal,
            convert.from_value(request.data) if request.HasField("data") else None,
            tenant=current_tenant(),
            signal_id=request.signal_id or None,
        )
        return pb.SignalExecutionResponse(execution=convert.execution_to_proto(record))

    async def ListWaits(
        self,
        request: pb.ListWaitsRequest,
        context: grpc.aio.ServicerContext[pb.ListWaitsRequest, pb.ListWaitsResponse],
    ) -> pb.ListWaitsResponse:
        ident = requests.execution_id(request.parent, "parent") if request.parent else None
        size = requests.page_size(request.page_size)
        after = requests.decode_token(request.page_token, "waits", request.parent)
        views = await self._engine.list_waits(
            tenant=current_tenant(), limit=size + 1, after=after, execution_id=ident
        )
        response = pb.ListWaitsResponse(waits=[convert.wait_to_proto(v) for v in views[:size]])
        if len(views) > size:
            last = views[size - 1].ref
            response.next_page_token = requests.encode_token(
                "waits", [last.execution_id, last.key], request.parent
            )
        return response

    async def AnswerWait(
        self,
        request: pb.AnswerWaitRequest,
        context: grpc.aio.ServicerContext[pb.AnswerWaitRequest, pb.AnswerWaitResponse],
    ) -> pb.AnswerWaitResponse:
        if request.WhichOneof("target") is None:
            raise invalid_argument(
                "wait_id", "required: the wait's id, or its callback token in `token`"
            )
        record, view = await self._engine.answer_wait(
            data=convert.from_value(request.data) if request.HasField("data") else None,
            wait_id=request.wait_id,
            token=request.token,
            tenant=current_tenant(),
        )
        return pb.AnswerWaitResponse(
            execution=convert.execution_to_proto(record), wait=convert.wait_to_proto(view)
        )

    async def RerunExecution(
        self,
        request: pb.RerunExecutionRequest,
        context: grpc.aio.ServicerContext[pb.RerunExecutionRequest, pb.RerunExecutionResponse],
    ) -> pb.RerunExecutionResponse:
        if request.version < 0:
            raise invalid_argument("version", "must not be negative")
        record = await self._engine.rerun(
            requests.execution_id(request.name),
            tenant=current_tenant(),
            from_node=request.from_node_id or None,
            input=convert.from_value(request.input) if request.HasField("input") else None,
            version=request.version or None,
            request_id=request.request_id or None,
            # The rerun joins the caller's trace.
            labels=_trace_labels(context, self._tracing),
        )
        return pb.RerunExecutionResponse(execution=convert.execution_to_proto(record))

    async def ListExecutionEvents(
        self,
        request: pb.ListExecutionEventsRequest,
        context: grpc.aio.ServicerContext[
            pb.ListExecutionEventsRequest, pb.ListExecutionEventsResponse
        ],
    ) -> pb.ListExecutionEventsResponse:
        ident = requests.execution_id(request.parent, "parent")
        size = requests.page_size(request.page_size, default=requests.MAX_PAGE_SIZE)
        after = requests.decode_token(request.page_token, "events", ident)
        if after is None:
            after = requests.sequence(request.after_sequence)
        records = await self._engine.list_events(
            ident, tenant=current_tenant(), after_sequence=after, limit=size + 1
        )
        response = pb.ListExecutionEventsResponse()
        budget = self._max_page_bytes
        for record in records[:size]:
            event = convert.event_to_proto(record, max_bytes=self._max_event_bytes)
            budget -= event.ByteSize()
            if budget < 0 and response.events:
                break  # the page is full: the token resumes after the last event sent
            response.events.append(event)
        if len(records) > len(response.events):
            response.next_page_token = requests.encode_token(
                "events", response.events[-1].sequence, ident
            )
        return response

    async def GetExecutionTrace(
        self,
        request: pb.GetExecutionTraceRequest,
        context: grpc.aio.ServicerContext[
            pb.GetExecutionTraceRequest, pb.GetExecutionTraceResponse
        ],
    ) -> pb.GetExecutionTraceResponse:
        ident = requests.execution_id(request.name)
        tenant = current_tenant()
        record = await self._engine.get_execution(ident, tenant=tenant)
        nodes = await self._engine.get_nodes(ident, tenant=tenant)
        events = []
        after = 0
        while True:
            page = await self._engine.list_events(
                ident, tenant=tenant, after_sequence=after, limit=1000
            )
            events.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].sequence
        view = trace_view.build_trace(record, nodes, events)
        return pb.GetExecutionTraceResponse(trace=convert.trace_to_proto(view))

    async def WatchExecution(
        self,
        request: pb.WatchExecutionRequest,
        context: grpc.aio.ServicerContext[pb.WatchExecutionRequest, pb.WatchExecutionResponse],
    ) -> AsyncIterator[pb.WatchExecutionResponse]:
        ident = requests.execution_id(request.name)
        after = requests.sequence(request.after_sequence)
        events = self._engine.watch(ident, tenant=current_tenant(), after_sequence=after)
        last = after
        async for record in until_stopped(events, self._lifecycle.draining):
            last = record.sequence
            yield pb.WatchExecutionResponse(
                event=convert.event_to_proto(record, max_bytes=self._max_event_bytes)
            )
        if self._lifecycle.is_draining:
            # The client resumes after `last_sequence` on another replica or after a restart.
            raise ApiError(
                "SHUTTING_DOWN",
                "the server is shutting down; resume with after_sequence",
                last_sequence=last,
            )


def _trace_labels(
    context: grpc.aio.ServicerContext[Any, Any], tracing: bool | None
) -> dict[str, str] | None:
    """`traceparent` for the new execution: the RPC's span when the server traces (so the
    execution's span is its child), else the caller's own, so the trace id is kept."""
    value = trace_context.current_traceparent() if tracing is not False else None
    if value is None:
        value = trace_context.metadata_traceparent(context.invocation_metadata())
        if not trace_context.valid_traceparent(value):
            value = None
    return {"traceparent": value} if value else None
