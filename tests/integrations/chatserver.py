"""A local server that speaks the chat-completions API, scripted turn by turn.

Each request takes the next step of `script`: {"content": TEXT}, {"tool_calls": [{name,
arguments}]} (either with a "usage" to report instead of 11 prompt tokens a message and 7
completion tokens), {"status": 429, "headers": {...}, "json": {...}}, or {"raw": BYTES} (sent as is,
with status 200). Requests with `stream: true` get server-sent events, the content split into
small pieces and tool-call arguments split across chunks, usage in the last chunk.
`holds={N: event}` stops a streamed answer before its piece N until the event is set, so a
test can look at a node mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from .httpserver import HttpServer, Request, Response


class ChatServer(HttpServer):
    def __init__(
        self,
        script: list[dict[str, Any]] | None = None,
        *,
        piece: int = 4,
        pause: float = 0.0,
        holds: dict[int, asyncio.Event] | None = None,
    ) -> None:
        super().__init__(self._handle)
        self.script = list(script or [])
        self.bodies: list[dict[str, Any]] = []
        self.piece = piece
        self.pause = pause
        self.holds = dict(holds or {})
        # Pieces of streamed content sent so far (over all requests).
        self.pieces_sent = 0

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def _handle(self, request: Request) -> Response:
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return Response(404, b"not found")
        body = request.json()
        self.bodies.append(body)
        if not self.script:
            return Response.json({"error": {"message": "script exhausted"}}, 500)
        step = self.script.pop(0)
        if "status" in step:
            return Response.json(
                step.get("json", {"error": {"message": "scripted"}}),
                step["status"],
                step.get("headers"),
            )
        if "raw" in step:
            ctype = "text/event-stream" if body.get("stream") else "application/json"
            return Response(200, step["raw"], {"Content-Type": ctype})
        usage = step.get("usage") or {
            "prompt_tokens": 11 * len(body["messages"]),
            "completion_tokens": 7,
            "total_tokens": 11 * len(body["messages"]) + 7,
        }
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in enumerate(step.get("tool_calls") or [])
        ]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
            if calls:
                message["tool_calls"] = calls
            return Response.json(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if calls else "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        return Response(
            200,
            self._sse(body["model"], step.get("content") or "", calls, usage),
            {"Content-Type": "text/event-stream"},
        )

    async def _sse(
        self, model: str, content: str, calls: list[dict[str, Any]], usage: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            data = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant"})
        for n, i in enumerate(range(0, len(content), self.piece)):
            hold = self.holds.get(n)
            if hold is not None:
                await hold.wait()
            if self.pause:
                await asyncio.sleep(self.pause)
            yield chunk({"content": content[i : i + self.piece]})
            self.pieces_sent += 1
        for index, call in enumerate(calls):
            args = call["function"]["arguments"]
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": args[:5]},
                        }
                    ]
                }
            )
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": args[5:]}}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        yield f"data: {json.dumps({'id': 'chatcmpl-1', 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
