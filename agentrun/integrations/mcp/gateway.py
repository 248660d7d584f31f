"""agentrun as an MCP server: an agentrun server's workflows as MCP tools (`agentrun mcp`).

A client of a running agentrun server over gRPC (one source of truth: the workflows, the
executions and their durability are the server's), built on the SDK's low-level `Server`,
whose tool list is read from the agentrun server at each `tools/list`, so a workflow created
later appears without a restart.

- Each DAG workflow (or each one `--workflow` selects) is a tool named after it. Its input
  schema is the workflow's `input_schema`; one that does not describe an object (MCP
  arguments are always an object) is offered as `{input: SCHEMA}` and unwrapped.
- A call starts an execution and watches it for up to `wait` seconds, reporting each event
  as a progress notification (`execution.running`, `node.succeeded NODE`, ...) when the
  client asked for progress. The result (structured,
  and as JSON text) is `{execution_id, state, done, output?, error?}`; an execution that
  ended other than SUCCEEDED is an `isError` result. One still running after `wait` seconds
  is returned with `done: false`: the `get_execution` tool polls it (and may wait too).
- A call the MCP client cancels leaves the execution running: it is durable, and
  `get_execution` finds it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from agentrun.client import AsyncClient
from agentrun.client.errors import (
    AgentrunError,
    DeadlineExceeded,
    InvalidArgument,
    InvalidInput,
    NotFound,
)
from agentrun.client.types import Execution, Workflow

log = logging.getLogger("agentrun.mcp")

GET_EXECUTION = "get_execution"
WRAPPED = "input"
MAX_WAIT = 3600.0

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["execution_id", "state", "done"],
    "properties": {
        "execution_id": {"type": "string"},
        "workflow": {"type": "string"},
        "state": {"type": "string", "description": "SUCCEEDED, FAILED, RUNNING, WAITING, ..."},
        "done": {"type": "boolean", "description": "false: still running; poll get_execution"},
        "output": {"description": "the execution's output, once SUCCEEDED"},
        "error": {"type": "object", "description": "{type, message, node_id} when it failed"},
    },
}
GET_EXECUTION_TOOL = types.Tool(
    name=GET_EXECUTION,
    description=(
        "The state of an agentrun execution started by one of the workflow tools, and "
        "its output once it has ended. `wait` (seconds) waits for the end first."
    ),
    input_schema={
        "type": "object",
        "required": ["execution_id"],
        "properties": {
            "execution_id": {"type": "string"},
            "wait": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_WAIT,
                "description": "seconds to wait for the execution to end (default 0)",
            },
        },
        "additionalProperties": False,
    },
    output_schema=RESULT_SCHEMA,
    annotations=types.ToolAnnotations(read_only_hint=True),
)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    # Workflow names to offer; empty: every DAG workflow of the tenant.
    workflows: tuple[str, ...] = ()
    # Seconds a call waits for the execution to end before answering `done: false`.
    wait: float = 60.0


def workflow_tool(workflow: Workflow) -> types.Tool:
    schema = workflow.spec.get("input_schema")
    if not isinstance(schema, dict) or not schema:
        input_schema: dict[str, Any] = {"type": "object"}
    elif _describes_object(schema):
        input_schema = schema
    else:
        input_schema = {"type": "object", "required": [WRAPPED], "properties": {WRAPPED: schema}}
    description = workflow.description or f"Runs the agentrun workflow {workflow.name}."
    return types.Tool(
        name=workflow.name,
        description=f"{description} (agentrun workflow {workflow.name}, version {workflow.version})",
        input_schema=input_schema,
        output_schema=RESULT_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=False, open_world_hint=True),
    )


def _describes_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "object" or (kind is None and "properties" in schema)


def is_wrapped(tool: types.Tool) -> bool:
    props = tool.input_schema.get("properties") or {}
    return tool.input_schema.get("required") == [WRAPPED] and set(props) == {WRAPPED}


def execution_result(execution: Execution) -> types.CallToolResult:
    done = execution.state.terminal
    body: dict[str, Any] = {
        "execution_id": execution.id,
        "workflow": execution.workflow,
        "state": execution.state.value,
        "done": done,
    }
    if done and execution.state.value == "SUCCEEDED":
        body["output"] = execution.output
    if execution.error is not None:
        body["error"] = {
            "type": execution.error.type,
            "message": execution.error.message,
            "node_id": execution.error.node_id,
        }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, default=str))],
        structured_content=body,
        is_error=done and execution.state.value != "SUCCEEDED",
    )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], is_error=True
    )


class Gateway:
    """The MCP handlers over one agentrun client."""

    def __init__(self, client: AsyncClient, options: GatewayOptions) -> None:
        self.client = client
        self.options = options
        self.server: Server[Any] = Server(
            "agentrun",
            instructions=(
                "Each tool runs an agentrun workflow and returns its output; a long run "
                "answers with its execution_id and done: false, which get_execution polls."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    async def tools(self) -> list[types.Tool]:
        found = [workflow_tool(w) async for w in self.client.list_workflows() if self._offers(w)]
        return [*found, GET_EXECUTION_TOOL]

    def _offers(self, workflow: Workflow) -> bool:
        if self.options.workflows and workflow.name not in self.options.workflows:
            return False
        # A state machine's instances receive events; they do not run to an output.
        return workflow.spec.get("mode") != "MODE_STATE_MACHINE"

    async def _tool(self, name: str) -> types.Tool:
        """The offered workflow `name` as a tool (one GetWorkflow, not the whole list)."""
        try:
            workflow = await self.client.get_workflow(name)
        except (NotFound, InvalidArgument):  # InvalidArgument: not even a workflow name
            workflow = None
        if workflow is None or not self._offers(workflow):
            raise MCPError(INVALID_PARAMS, f"no tool named {name!r}: it is not an offered workflow")
        return workflow_tool(workflow)

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        try:
            return types.ListToolsResult(tools=await self.tools())
        except AgentrunError as exc:
            raise MCPError(types.INTERNAL_ERROR, f"agentrun server: {exc}") from None

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        args = dict(params.arguments or {})
        try:
            if params.name == GET_EXECUTION:
                return await self._get_execution(ctx, args)
            return await self._run_workflow(ctx, params.name, args)
        except InvalidInput as exc:
            return error_result(f"invalid input for workflow {params.name}: {exc}")
        except NotFound as exc:
            return error_result(str(exc))
        except AgentrunError as exc:
            return error_result(f"agentrun server: {exc}")

    async def _run_workflow(
        self, ctx: Any, name: str, args: dict[str, Any]
    ) -> types.CallToolResult:
        tool = await self._tool(name)
        run_input = args.get(WRAPPED) if is_wrapped(tool) else args
        execution = await self.client.start_execution(name, run_input)
        return await self._wait(ctx, execution.id, self.options.wait)

    async def _get_execution(self, ctx: Any, args: dict[str, Any]) -> types.CallToolResult:
        execution_id = args.get("execution_id")
        wait = args.get("wait", 0)
        if not isinstance(execution_id, str) or not execution_id:
            raise MCPError(INVALID_PARAMS, "execution_id: expected the id a workflow tool returned")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
            raise MCPError(INVALID_PARAMS, f"wait: expected seconds between 0 and {MAX_WAIT:g}")
        return await self._wait(ctx, execution_id, float(wait))

    async def _wait(self, ctx: Any, execution_id: str, wait: float) -> types.CallToolResult:
        """Watches the execution for up to `wait` seconds, each event a progress
        notification; then its state as a result."""
        execution = await self.client.get_execution(execution_id)
        if wait > 0 and not execution.state.terminal:
            seen = 0
            try:
                async for event in self.client.watch(execution_id, timeout=wait):
                    seen += 1
                    await _progress(ctx, seen, f"{event.type} {event.node_id}".strip())
            except DeadlineExceeded:
                pass
            execution = await self.client.get_execution(execution_id)
        return execution_result(execution)


async def _progress(ctx: Any, seen: int, text: str) -> None:
    """A progress notification, when the client asked for them (a no-op otherwise)."""
    try:
        await ctx.session.report_progress(seen, None, text)
    except Exception as exc:  # a client gone mid-call must not end the watch
        log.debug("progress notification not sent: %s", exc)


def selected_missing(workflows: Iterable[str], tools: list[types.Tool]) -> list[str]:
    """Names `--workflow` asked for that the server does not offer (for a warning)."""
    offered = {t.name for t in tools}
    return sorted(set(workflows) - offered)
