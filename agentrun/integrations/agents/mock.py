"""The `mock` agent provider: deterministic answers, so workflows run offline.

`mock/echo` answers {text: PROMPT}. Any other `mock/NAME` answers from the responses
configured for NAME (`mock: {responses: {NAME: VALUE or [VALUES]}}` in server config); a
list is answered in turn, cycling. A string answer becomes {text: ...}, or is parsed as
JSON when the call has an output_schema.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from agentrun.engine.ports import AgentProvider, AgentRequest, CallContext, ToolFailure


class MockProvider(AgentProvider):
    name = "mock"

    def __init__(self, responses: Mapping[str, Any] | None = None) -> None:
        self._responses = dict(responses or {})
        self._cursors: dict[str, itertools.cycle[Any]] = {}

    def knows_model(self, model: str) -> bool:
        return model == "echo" or model in self._responses

    async def complete(self, request: AgentRequest, ctx: CallContext) -> Any:
        if request.model == "echo":
            return {"text": request.prompt}
        if request.model not in self._responses:
            raise ToolFailure("agent_error", f"mock model {request.model!r} has no responses configured")
        answer = self._next(request.model)
        if isinstance(answer, str):
            if request.output_schema is not None:
                try:
                    return json.loads(answer)
                except ValueError:
                    raise ToolFailure("invalid_output", "mock answer is not JSON") from None
            return {"text": answer}
        return answer

    def _next(self, model: str) -> Any:
        value = self._responses[model]
        if not isinstance(value, list):
            return value
        cursor = self._cursors.get(model)
        if cursor is None:
            cursor = self._cursors[model] = itertools.cycle(value)
        return next(cursor)
