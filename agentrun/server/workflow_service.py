"""WorkflowService: thin adapters from requests to the engine and back."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import grpc

from agentrun.engine.errors import AlreadyExists, InvalidWorkflow
from agentrun.server import convert, requests, specs
from agentrun.server.auth import current_tenant
from agentrun.server.errors import invalid_argument
from agentrun.v1 import workflow_service_pb2 as pb
from agentrun.v1 import workflow_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from agentrun.engine import Engine
    from agentrun.storage.records import WorkflowRecord
    from agentrun.v1.workflow_pb2 import WorkflowSpec

# Remembered CreateWorkflow request ids (per process; a restart forgets them).
_REQUEST_IDS = 10_000


class WorkflowService(pb_grpc.WorkflowServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._created: OrderedDict[tuple[str, str], tuple[str, str, int]] = OrderedDict()

    async def CreateWorkflow(
        self,
        request: pb.CreateWorkflowRequest,
        context: grpc.aio.ServicerContext[pb.CreateWorkflowRequest, pb.CreateWorkflowResponse],
    ) -> pb.CreateWorkflowResponse:
        tenant = current_tenant()
        spec = await specs.from_request(request)
        # The answer copies `spec` (what was stored) rather than rebuild it from the stored
        # form on the loop: convert.set_workflow.
        digest = specs.fingerprint(request) if request.request_id else ""
        key = (tenant, request.request_id)
        if request.request_id:
            seen = self._created.get(key)
            if seen is not None:
                if seen[0] != digest:
                    raise AlreadyExists(
                        "request_id was used with another workflow", request_id=request.request_id
                    )
                record = await self._engine.get_workflow(seen[1], tenant=tenant, version=seen[2])
                # The same definition as the first request's, which is what was stored.
                return _created(record, spec)
        record = await self._engine.create_workflow(spec, tenant=tenant)
        if request.request_id:
            self._created[key] = (digest, record.name, record.version)
            while len(self._created) > _REQUEST_IDS:
                self._created.popitem(last=False)
        return _created(record, spec)

    async def GetWorkflow(
        self,
        request: pb.GetWorkflowRequest,
        context: grpc.aio.ServicerContext[pb.GetWorkflowRequest, pb.GetWorkflowResponse],
    ) -> pb.GetWorkflowResponse:
        name = requests.workflow_name(request.name)
        if request.version < 0:
            raise invalid_argument("version", "must not be negative")
        record = await self._engine.get_workflow(
            name, tenant=current_tenant(), version=request.version or None
        )
        # Rebuilding the message from the stored form parses every node (~50 ms for 10,000):
        # on a worker thread, so the loop keeps serving meanwhile.
        return await asyncio.to_thread(_got, record)

    async def ListWorkflows(
        self,
        request: pb.ListWorkflowsRequest,
        context: grpc.aio.ServicerContext[pb.ListWorkflowsRequest, pb.ListWorkflowsResponse],
    ) -> pb.ListWorkflowsResponse:
        if request.filter.strip():
            raise invalid_argument("filter", "filters on workflows are not supported yet")
        size = requests.page_size(request.page_size)
        after = requests.decode_token(request.page_token, "workflows")
        records = await self._engine.list_workflows(
            tenant=current_tenant(), limit=size + 1, after_name=after
        )
        response = await asyncio.to_thread(_listed, records[:size])  # as GetWorkflow
        if len(records) > size:
            response.next_page_token = requests.encode_token("workflows", records[size - 1].name)
        return response

    async def ListTools(
        self,
        request: pb.ListToolsRequest,
        context: grpc.aio.ServicerContext[pb.ListToolsRequest, pb.ListToolsResponse],
    ) -> pb.ListToolsResponse:
        size = requests.page_size(request.page_size)
        prefix = request.filter.strip()
        after = requests.decode_token(request.page_token, "tools", prefix)
        names = [
            n
            for n in self._engine.tools.names()
            if n.startswith(prefix) and (after is None or n > after)
        ]
        response = pb.ListToolsResponse(
            tools=[_tool_to_proto(self._engine.tools.get(n)) for n in names[:size]]
        )
        if len(names) > size:
            response.next_page_token = requests.encode_token("tools", names[size - 1], prefix)
        return response

    async def UpdateWorkflow(
        self,
        request: pb.UpdateWorkflowRequest,
        context: grpc.aio.ServicerContext[pb.UpdateWorkflowRequest, pb.UpdateWorkflowResponse],
    ) -> pb.UpdateWorkflowResponse:
        tenant = current_tenant()
        name = requests.workflow_name(request.name)
        spec = await specs.from_request(request, name=name)
        if not request.allow_missing:
            await self._engine.get_workflow(name, tenant=tenant)  # WorkflowNotFound
        record = await self._engine.create_workflow(spec, tenant=tenant)
        response = pb.UpdateWorkflowResponse()
        convert.set_workflow(response.workflow, record, spec=spec)
        return response

    async def DeleteWorkflow(
        self,
        request: pb.DeleteWorkflowRequest,
        context: grpc.aio.ServicerContext[pb.DeleteWorkflowRequest, pb.DeleteWorkflowResponse],
    ) -> pb.DeleteWorkflowResponse:
        name = requests.workflow_name(request.name)
        await self._engine.delete_workflow(name, tenant=current_tenant())
        return pb.DeleteWorkflowResponse()

    async def ValidateWorkflow(
        self,
        request: pb.ValidateWorkflowRequest,
        context: grpc.aio.ServicerContext[pb.ValidateWorkflowRequest, pb.ValidateWorkflowResponse],
    ) -> pb.ValidateWorkflowResponse:
        try:
            spec = await specs.from_request(request)
            plan = await asyncio.to_thread(self._engine.validate, spec)  # off the loop
        except InvalidWorkflow as exc:
            return pb.ValidateWorkflowResponse(
                valid=False, errors=[convert.diagnostic_to_proto(d) for d in exc.diagnostics]
            )
        return pb.ValidateWorkflowResponse(
            valid=True,
            warnings=[convert.diagnostic_to_proto(d) for d in plan.warnings],
            stages=[pb.Stage(node_ids=list(stage)) for stage in plan.stages],
        )


__all__ = ["WorkflowService"]


def _created(record: WorkflowRecord, spec: WorkflowSpec) -> pb.CreateWorkflowResponse:
    response = pb.CreateWorkflowResponse()
    convert.set_workflow(response.workflow, record, spec=spec)
    return response


def _got(record: WorkflowRecord) -> pb.GetWorkflowResponse:
    response = pb.GetWorkflowResponse()
    convert.set_workflow(response.workflow, record)
    return response


def _listed(records: list[WorkflowRecord]) -> pb.ListWorkflowsResponse:
    response = pb.ListWorkflowsResponse()
    for record in records:
        convert.set_listed_workflow(response.workflows.add(), record)
    return response


def _tool_to_proto(tool: Any) -> pb.Tool:
    message = pb.Tool(
        name=tool.name,
        description=tool.description or "",
        effect=f"EFFECT_{str(tool.effect).upper()}",
    )
    if tool.args_schema is not None:
        message.args_schema.update(dict(tool.args_schema))
    if tool.result_schema is not None:
        message.result_schema.update(dict(tool.result_schema))
    return message
