"""The `mock` agent provider: deterministic answers, so workflows run offline.

`mock/echo` answers {text: PROMPT}. Any other `mock/NAME` answers from the responses
configured for NAME (`mock: {responses: {NAME: VALUE or [VALUES]}}` in server config); a
list is answered in turn, cycling. A string answer becomes {text: ...}, or is parsed as
JSON when the call has an output_schema.

A response `{tool_calls: [{name: TOOL, args: {...}}, ...]}` makes the model call those tools
(they must be among the node's `agent.tools`) through the same tool loop as a real provider,
then go on to the next response; so a tool-calling agent runs offline too.

A node with `stream: true` gets its answer's text (a structured answer as JSON) emitted word
by word as `agent.delta` pieces, as a real model's would be (the mock does not stream by
default).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from agentrun.engine.ports import (
    AgentProvider,
    AgentRequest,
    CallContext,
    ToolFailure,
    ToolRegistry,
)
from agentrun.integrations.agents.tooling import AgentTools, emit

DEFAULT_MAX_TURNS = 8


class MockProvider(AgentProvider):
    name = "mock"

    def __init__(
        self,
        responses: Mapping[str, Any] | None = None,
        *,
        tools: ToolRegistry | Callable[[], ToolRegistry | None] | None = None,
        name: str = "mock",
    ) -> None:
        self.name = name
        self._responses = dict(responses or {})
        self._cursors: dict[str, itertools.cycle[Any]] = {}
        self._tools = tools

    def knows_model(self, model: str) -> bool:
        return model == "echo" or model in self._responses

    def _registry(self) -> ToolRegistry | None:
        tools = self._tools
        return tools() if callable(tools) and not isinstance(tools, ToolRegistry) else tools

    async def complete(self, request: AgentRequest, ctx: CallContext) -> Any:
        if request.model == "echo":
            return self._streamed({"text": request.prompt}, request, ctx, 1)
        if request.model not in self._responses:
            raise ToolFailure(
                "agent_error", f"mock model {request.model!r} has no responses configured"
            )
        max_turns = request.max_turns or DEFAULT_MAX_TURNS
        tools: AgentTools | None = None
        for turn in range(1, max_turns + 1):
            answer = self._next(request.model)
            calls = (
                answer.get("tool_calls")
                if isinstance(answer, dict) and set(answer) == {"tool_calls"}
                else None
            )
            if calls is None:
                return self._streamed(self._final(answer, request, ctx, turn), request, ctx, turn)
            if tools is None:
                tools = AgentTools(self._registry(), request.tools, ctx)
            for index, call in enumerate(calls):
                await tools.call(
                    tools.wire_name(call["name"])
                    if call.get("name") in request.tools
                    else str(call.get("name")),
                    call.get("args") or {},
                    turn=turn,
                    index=index,
                    call_id=f"mock-{turn}-{index}",
                )
        raise ToolFailure(
            "agent_error", f"the model still called tools after max_turns={max_turns}"
        )

    def _final(self, answer: Any, request: AgentRequest, ctx: CallContext, turn: int) -> Any:
        if isinstance(answer, str):
            if request.output_schema is not None:
                try:
                    return json.loads(answer)
                except ValueError:
                    raise ToolFailure("invalid_output", "mock answer is not JSON") from None
            return {"text": answer}
        return answer

    def _streamed(self, answer: Any, request: AgentRequest, ctx: CallContext, turn: int) -> Any:
        if request.stream:
            text = (
                answer["text"]
                if isinstance(answer, dict) and set(answer) == {"text"}
                else json.dumps(answer)
            )
            for piece in re.findall(r"\s*\S+|\s+$", str(text)):
                emit(ctx, "agent.delta", {"turn": turn, "text": piece})
        return answer

    def _next(self, model: str) -> Any:
        value = self._responses[model]
        if not isinstance(value, list):
            return value
        cursor = self._cursors.get(model)
        if cursor is None:
            cursor = self._cursors[model] = itertools.cycle(value)
        return next(cursor)
