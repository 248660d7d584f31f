"""AsyncClient: the SDK over a grpc.aio channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any, Self

import grpc

from agentrun.client import _convert as c
from agentrun.client import _options
from agentrun.client.errors import from_rpc_error
from agentrun.client.types import (
    ControlOutcome,
    Execution,
    ExecutionEvent,
    ExecutionState,
    ValidationResult,
    Wait,
    Workflow,
)
from agentrun.v1 import execution_service_pb2 as es_pb
from agentrun.v1 import execution_service_pb2_grpc as es_grpc
from agentrun.v1 import workflow_pb2 as wf_pb
from agentrun.v1 import workflow_service_pb2 as ws_pb
from agentrun.v1 import workflow_service_pb2_grpc as ws_grpc

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class AsyncClient:
    """Talks to an agentrun server. Use as `async with AsyncClient(...) as client:`.

    `target` defaults to $AGENTRUN_ADDRESS or 127.0.0.1:50051 and `api_key` to
    $AGENTRUN_API_KEY. The raw stubs are `workflow_service` and `execution_service`.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = 30.0,
        channel: grpc.aio.Channel | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        watch_reconnects: int = 20,
    ) -> None:
        self.target = _options.target(target)
        self._own_channel = channel is None
        self.channel = channel or grpc.aio.insecure_channel(
            self.target, options=_options.channel_options(max_message_bytes)
        )
        self.metadata = _options.metadata(api_key)
        self.timeout = timeout
        self.watch_reconnects = watch_reconnects
        self.workflow_service = ws_grpc.WorkflowServiceStub(self.channel)
        self.execution_service = es_grpc.ExecutionServiceStub(self.channel)
        from agentrun.client.machines import AsyncMachinesClient

        # State machine instances (StateMachineService), on the same channel.
        self.machines = AsyncMachinesClient(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        """One RPC on a raw stub (`self.execution_service.ListExecutions`, ...) with this
        client's API key, timeout and error classes: for what the methods below do not wrap,
        such as one page of a list with its `next_page_token`. `timeout`: this call's
        deadline in seconds instead of the client's."""
        try:
            return await method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    # Workflows -------------------------------------------------------------------
    async def create_workflow(
        self,
        spec: wf_pb.WorkflowSpec | Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        request_id: str | None = None,
    ) -> Workflow:
        request = ws_pb.CreateWorkflowRequest(
            **c.definition(spec, source), request_id=request_id or ""
        )
        response = await self.call(self.workflow_service.CreateWorkflow, request)
        return c.workflow(response.workflow)

    async def get_workflow(self, name: str, *, version: int | None = None) -> Workflow:
        request = ws_pb.GetWorkflowRequest(name=c.workflow_name(name), version=version or 0)
        response = await self.call(self.workflow_service.GetWorkflow, request)
        return c.workflow(response.workflow)

    async def list_workflows(self, *, page_size: int = 100) -> AsyncIterator[Workflow]:
        token = ""
        while True:
            request = ws_pb.ListWorkflowsRequest(page_size=page_size, page_token=token)
            response = await self.call(self.workflow_service.ListWorkflows, request)
            for item in response.workflows:
                yield c.workflow(item)
            token = response.next_page_token
            if not token:
                return

    async def update_workflow(
        self,
        name: str,
        spec: wf_pb.WorkflowSpec | Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        allow_missing: bool = False,
    ) -> Workflow:
        request = ws_pb.UpdateWorkflowRequest(
            name=c.workflow_name(name), **c.definition(spec, source), allow_missing=allow_missing
        )
        response = await self.call(self.workflow_service.UpdateWorkflow, request)
        return c.workflow(response.workflow)

    async def delete_workflow(self, name: str) -> None:
        request = ws_pb.DeleteWorkflowRequest(name=c.workflow_name(name))
        await self.call(self.workflow_service.DeleteWorkflow, request)

    async def validate_workflow(
        self,
        spec: wf_pb.WorkflowSpec | Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
    ) -> ValidationResult:
        request = ws_pb.ValidateWorkflowRequest(**c.definition(spec, source))
        return c.validation(await self.call(self.workflow_service.ValidateWorkflow, request))

    # Executions ------------------------------------------------------------------
    async def start_execution(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: int | None = None,
        request_id: str | None = None,
        priority: int = 0,
        wait: bool = False,
        wait_timeout: float | None = None,
    ) -> Execution:
        """Starts an execution. With `wait`, the server answers once it ended (within
        `wait_timeout` seconds, 30 by default, at most 300) with its output or error, or at
        that deadline with the execution still running; the call's own timeout is extended
        by the wait."""
        request = c.start_request(
            workflow,
            input,
            version=version,
            request_id=request_id,
            priority=priority,
            wait=wait,
            wait_timeout=wait_timeout,
        )
        response = await self.call(
            self.execution_service.StartExecution,
            request,
            timeout=c.start_call_timeout(self.timeout, wait, wait_timeout),
        )
        return c.execution(response.execution)

    async def get_execution(
        self, execution: str | Execution, *, include_nodes: bool = False
    ) -> Execution:
        request = es_pb.GetExecutionRequest(
            name=c.execution_name(execution), include_nodes=include_nodes
        )
        response = await self.call(self.execution_service.GetExecution, request)
        return c.execution(response.execution, response.nodes)

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        states: Iterable[ExecutionState | str] = (),
        filter: str | None = None,
        page_size: int = 100,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        newest_first: bool = False,
    ) -> AsyncIterator[Execution]:
        """Every execution matching, page by page: `created_after` (inclusive) and
        `created_before` (exclusive) bound the creation time; oldest first unless
        `newest_first`."""
        base = c.list_executions_request(
            c.execution_filter(workflow, states, filter),
            created_after=created_after,
            created_before=created_before,
            newest_first=newest_first,
        )
        token = ""
        while True:
            request = es_pb.ListExecutionsRequest(page_size=page_size, page_token=token)
            request.MergeFrom(base)
            response = await self.call(self.execution_service.ListExecutions, request)
            for item in response.executions:
                yield c.execution(item)
            token = response.next_page_token
            if not token:
                return

    async def cancel_execution(
        self, execution: str | Execution, *, compensate: bool = False
    ) -> Execution:
        request = es_pb.CancelExecutionRequest(
            name=c.execution_name(execution), compensate=compensate
        )
        response = await self.call(self.execution_service.CancelExecution, request)
        return c.execution(response.execution)

    async def pause_execution(self, execution: str | Execution) -> Execution:
        request = es_pb.PauseExecutionRequest(name=c.execution_name(execution))
        response = await self.call(self.execution_service.PauseExecution, request)
        return c.execution(response.execution)

    async def resume_execution(
        self, execution: str | Execution, *, node_id: str | None = None, args: Any = c.NO_ARGS
    ) -> Execution:
        """Resumes a paused execution. `node_id` names the node it is paused on
        (`on_exhausted: pause`; IllegalTransition when it is not paused there); `args` replaces
        that node's arguments for its next attempts (InvalidArgument naming the field when the
        node cannot take them)."""
        request = c.resume_request(c.execution_name(execution), node_id, args)
        response = await self.call(self.execution_service.ResumeExecution, request)
        return c.execution(response.execution)

    async def control_executions(
        self,
        action: str,
        *,
        workflow: str | None = None,
        states: Iterable[ExecutionState | str] = (),
        filter: str | None = None,
        page_size: int = 100,
        compensate: bool = False,
    ) -> AsyncIterator[ControlOutcome]:
        """Pauses, resumes or cancels (`action`) every execution the filter matches (as
        list_executions'; one of workflow, states or filter is required), a page of at most
        `page_size` per call; yields each execution's outcome as its page is done."""
        text = c.execution_filter(workflow, states, filter)
        token = ""
        while True:
            request = c.control_request(action, text, page_size, token, compensate)
            response = await self.call(self.execution_service.ControlExecutions, request)
            for item in response.outcomes:
                yield c.control_outcome(item)
            token = response.next_page_token
            if not token:
                return

    async def signal_execution(
        self,
        execution: str | Execution,
        signal: str,
        data: Any = None,
        *,
        signal_id: str | None = None,
    ) -> Execution:
        request = c.signal_request(c.execution_name(execution), signal, data, signal_id)
        response = await self.call(self.execution_service.SignalExecution, request)
        return c.execution(response.execution)

    async def list_waits(
        self, *, execution: str | Execution | None = None, page_size: int = 100
    ) -> AsyncIterator[Wait]:
        """The pending waits for a signal (approvals to give) of the caller's tenant, or of one
        execution, by execution then node."""
        parent = c.execution_name(execution) if execution is not None else ""
        token = ""
        while True:
            request = es_pb.ListWaitsRequest(parent=parent, page_size=page_size, page_token=token)
            response = await self.call(self.execution_service.ListWaits, request)
            for item in response.waits:
                yield c.wait(item)
            token = response.next_page_token
            if not token:
                return

    async def answer_wait(
        self, wait_id: str | Wait | None = None, data: Any = None, *, token: str | None = None
    ) -> Execution:
        """Answers one wait, by its id (or `Wait`) or by its callback `token`: applied once.
        An answer to a wait that ended, or to an earlier attempt of its node, raises
        IllegalTransition (FAILED_PRECONDITION); data its schema refuses, InvalidArgument."""
        request = c.answer_request(wait_id, token, data)
        response = await self.call(self.execution_service.AnswerWait, request)
        return c.execution(response.execution)

    async def rerun_execution(
        self,
        execution: str | Execution,
        *,
        from_node: str | None = None,
        input: Any = None,
        version: int | None = None,
        request_id: str | None = None,
    ) -> Execution:
        """A new execution of a finished one, running again from `from_node` (default: where it
        failed) with the outputs of the other succeeded nodes reused."""
        request = es_pb.RerunExecutionRequest(
            name=c.execution_name(execution),
            from_node_id=from_node or "",
            request_id=request_id or "",
            version=version or 0,
        )
        if input is not None:
            request.input.CopyFrom(c.to_value(input))
        response = await self.call(self.execution_service.RerunExecution, request)
        return c.execution(response.execution)

    async def list_execution_events(
        self, execution: str | Execution, *, after_sequence: int = 0, page_size: int = 1000
    ) -> AsyncIterator[ExecutionEvent]:
        token = ""
        while True:
            request = es_pb.ListExecutionEventsRequest(
                parent=c.execution_name(execution),
                after_sequence=after_sequence,
                page_size=page_size,
                page_token=token,
            )
            response = await self.call(self.execution_service.ListExecutionEvents, request)
            for item in response.events:
                yield c.event(item)
            token = response.next_page_token
            if not token:
                return

    async def watch(
        self,
        execution: str | Execution,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[ExecutionEvent]:
        """Events after `after_sequence` until the execution ends (or DeadlineExceeded after
        `timeout` seconds). When the stream breaks (UNAVAILABLE: a restart, a drained server, a
        lost connection) it reconnects after the last event seen: no event is missed or repeated."""
        name = c.execution_name(execution)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_sequence
        failures = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self.execution_service.WatchExecution(
                es_pb.WatchExecutionRequest(name=name, after_sequence=last),
                metadata=self.metadata,
                timeout=remaining,
            )
            try:
                async for response in call:
                    if response.event.sequence <= last:
                        continue
                    event = c.event(response.event)
                    last = event.sequence
                    failures = 0
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != _UNAVAILABLE or failures >= self.watch_reconnects:
                    raise from_rpc_error(exc) from None
                failures += 1
                await asyncio.sleep(min(2.0, 0.025 * 2 ** (failures - 1)))
            finally:
                call.cancel()

    async def wait(self, execution: str | Execution, *, timeout: float | None = None) -> Execution:
        """Watches until the execution ends (DeadlineExceeded after `timeout` seconds), then
        returns it."""
        async for _ in self.watch(execution, timeout=timeout):
            pass
        return await self.get_execution(execution)
