"""An MCP server's tool as an agentrun Tool: `mcp.<server>.<tool>`.

The engine calls it like any tool (args validated against the MCP input schema, timeouts,
retries, circuit breakers), so only what is particular to MCP lives here: the effect read from
the tool's annotations, the call over the shared session, progress notifications as
`tool.progress` events, and the result or error mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations.mcp.connection import ConnectionLost, ServerError

if TYPE_CHECKING:
    from agentrun.integrations.mcp.connection import Connection
    from agentrun.integrations.mcp.loop import LoopThread

PREFIX = "mcp"
INVALID_PARAMS = -32602
# Keys agentrun puts in each call's `_meta`, for servers that deduplicate repeated calls.
META_IDEMPOTENCY_KEY = "io.agentrun/idempotencyKey"
META_ATTEMPT = "io.agentrun/attempt"
META_EXECUTION = "io.agentrun/executionId"


def effect_of(annotations: Any) -> Effect:
    """The effect class an MCP tool's annotations imply.

    readOnlyHint → pure; destructiveHint → irreversible (never retried automatically);
    idempotentHint → idempotent (retries allowed). A tool that says none of these may add to
    its effect when repeated (MCP's defaults: not read-only, not idempotent), so it is
    irreversible too: retry it only after saying so in `effects:`.
    """
    if annotations is None:
        return Effect.IRREVERSIBLE
    if annotations.read_only_hint:
        return Effect.PURE
    if annotations.destructive_hint:
        return Effect.IRREVERSIBLE
    if annotations.idempotent_hint:
        return Effect.IDEMPOTENT
    return Effect.IRREVERSIBLE


class McpTool(Tool):
    def __init__(
        self,
        *,
        server: str,
        remote: Any,
        connection: Connection,
        loop: LoopThread,
        effect: Effect | None = None,
    ) -> None:
        self.server = server
        self.remote_name: str = remote.name
        self.name = f"{PREFIX}.{server}.{remote.name}"
        self.description = remote.description or remote.title or ""
        self.args_schema = dict(remote.input_schema) if remote.input_schema else None
        self.result_schema = dict(remote.output_schema) if remote.output_schema else None
        self.effect = effect or effect_of(remote.annotations)
        self._connection = connection
        self._loop = loop

    async def call(self, args: Any, ctx: CallContext) -> Any:
        caller = asyncio.get_running_loop()
        emit = ctx.emit

        async def progress(done: float, total: float | None, message: str | None) -> None:
            # On the MCP loop: the event is appended on the engine's loop.
            if emit is not None:
                data = {"tool": self.name, "progress": done, "total": total, "message": message}
                caller.call_soon_threadsafe(emit, "tool.progress", data)

        meta = {
            META_IDEMPOTENCY_KEY: ctx.idempotency_key,
            META_ATTEMPT: ctx.attempt,
            META_EXECUTION: ctx.execution_id,
        }
        try:
            result = await self._loop.run(
                self._connection.call_tool(
                    self.remote_name, args or {}, meta=meta, progress=progress
                )
            )
        except ConnectionLost as exc:
            raise ToolFailure(
                "mcp.unavailable", str(exc), details={"server": self.server}
            ) from None
        except ServerError as exc:
            kind = "invalid_args" if exc.code == INVALID_PARAMS else "mcp.error"
            details: dict[str, Any] = {"server": self.server, "code": exc.code}
            if exc.data is not None:
                details["data"] = exc.data
            raise ToolFailure(kind, f"{self.name}: {exc.message}", details=details) from None
        return result_value(self.name, result)


def result_value(name: str, result: Any) -> Any:
    """structuredContent when the server sent it, else the content blocks; `isError` → a
    `tool_error` whose message is the text the server gave."""
    blocks = [_block(b) for b in (getattr(result, "content", None) or [])]
    text = "\n".join(
        b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
    )
    if getattr(result, "is_error", False):
        raise ToolFailure(
            "tool_error",
            f"{name}: {text or 'the tool reported an error'}",
            details={"content": blocks},
        )
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured
    return {"content": blocks, "text": text}


def _block(block: Any) -> dict[str, Any]:
    if hasattr(block, "model_dump"):
        dumped: Mapping[str, Any] = block.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dict(dumped)
    return dict(block) if isinstance(block, Mapping) else {"type": "unknown", "value": str(block)}
