"""What a provider needs to let a model call registered tools, and to stream safely.

`AgentTools` offers the tools an agent node lists (`agent.tools`) to the model under names the
chat-completions API accepts, validates the model's arguments against each tool's JSON Schema,
calls the tool with an idempotency key derived from the node's (`KEY/tools/TURN.INDEX`, so a
retried node repeats the same keys for the same calls) and turns the outcome, success or
failure, into what goes back to the model. Each call is reported as `agent.tool_call` and
`agent.tool_result` events.

`DeltaStream` emits streamed text as `agent.delta` events, a few per second at most, and
never a piece of a secret: text that could be the start of a secret value is held back until
it is known not to be one (the engine redacts whole values per event; a value split across two
events would slip past it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import jsonschema

from agentrun.engine.ports import CallContext, ToolFailure, ToolRegistry
from agentrun.engine.redact import MIN_SECRET_LENGTH, Redactor

MAX_RESULT_CHARS = 32_000
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def emit(ctx: CallContext, type_: str, data: dict[str, Any]) -> None:
    if ctx.emit is not None:
        ctx.emit(type_, data)


class AgentTools:
    def __init__(self, registry: ToolRegistry | None, names: Iterable[str], ctx: CallContext) -> None:
        self.ctx = ctx
        self._by_wire: dict[str, str] = {}
        self._tools = {}
        for name in names:
            tool = registry.get(name) if registry is not None else None
            if tool is None:
                raise ToolFailure("agent_error", f"tool {name!r} is not registered")
            wire = _BAD.sub("_", name)[:60]
            base, n = wire, 1
            while wire in self._by_wire:
                n += 1
                wire = f"{base[:57]}_{n}"
            self._by_wire[wire] = name
            self._tools[name] = tool

    def __bool__(self) -> bool:
        return bool(self._tools)

    def wire_name(self, name: str) -> str:
        return next(w for w, n in self._by_wire.items() if n == name)

    def openai_specs(self) -> list[dict[str, Any]]:
        specs = []
        for wire, name in self._by_wire.items():
            tool = self._tools[name]
            schema = dict(tool.args_schema) if tool.args_schema else {"type": "object"}
            specs.append({
                "type": "function",
                "function": {"name": wire, "description": (tool.description or name)[:1024], "parameters": schema},
            })
        return specs

    async def call(self, wire: str, raw_args: Any, *, turn: int, index: int, call_id: str = "") -> tuple[bool, Any]:
        """Runs one call the model asked for: (ok, result or error) for the model to read."""
        name = self._by_wire.get(wire) or (wire if wire in self._tools else None)
        emit(self.ctx, "agent.tool_call", {"turn": turn, "index": index, "tool": name or wire, "call_id": call_id})
        ok, value = await self._call(name, wire, raw_args, turn, index)
        data: dict[str, Any] = {"turn": turn, "index": index, "tool": name or wire, "ok": ok}
        if not ok:
            data["error"] = value
        emit(self.ctx, "agent.tool_result", data)
        return ok, value

    async def _call(self, name: str | None, wire: str, raw_args: Any, turn: int, index: int) -> tuple[bool, Any]:
        if name is None:
            return False, {"type": "unknown_tool", "message": f"no tool named {wire!r} is offered"}
        tool = self._tools[name]
        if isinstance(raw_args, str):
            try:
                args = json.loads(raw_args) if raw_args.strip() else {}
            except ValueError:
                return False, {"type": "invalid_args", "message": "arguments are not valid JSON"}
        else:
            args = raw_args if raw_args is not None else {}
        if tool.args_schema:
            errors = sorted(jsonschema.Draft202012Validator(tool.args_schema).iter_errors(args), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in e.path)
                return False, {"type": "invalid_args", "message": f"args{where}: {e.message}", "field": f"args{where}"}
        sub = replace(self.ctx, idempotency_key=f"{self.ctx.idempotency_key}/tools/{turn}.{index}")
        try:
            return True, await tool.call(args, sub)
        except ToolFailure as exc:
            return False, {"type": exc.type, "message": exc.message}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken tool is reported to the model, not raised
            return False, {"type": "internal", "message": f"{type(exc).__name__}: {exc}"}


def result_text(ok: bool, value: Any) -> str:
    text = json.dumps(value if ok else {"error": value}, ensure_ascii=False, default=str)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + "...(truncated)"
    return text


class DeltaStream:
    def __init__(self, ctx: CallContext, *, turn: int, interval: float = 0.05) -> None:
        self.ctx = ctx
        self.turn = turn
        self.interval = interval
        values = [v for v in ctx.secrets.values() if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH]
        self._secrets = values
        self._redactor = Redactor(values)
        self._pending = ""
        self._ready = ""
        self._last = 0.0
        self.sent = 0

    def feed(self, text: str) -> None:
        if not text:
            return
        self._pending += text
        if self._redactor:
            self._pending = self._redactor.text(self._pending)
            hold = self._held_suffix(self._pending)
        else:
            hold = 0
        cut = len(self._pending) - hold
        self._ready += self._pending[:cut]
        self._pending = self._pending[cut:]
        now = time.monotonic()
        if self._ready and now - self._last >= self.interval:
            self._send()
            self._last = now

    def close(self) -> None:
        self._ready += self._redactor.text(self._pending) if self._redactor else self._pending
        self._pending = ""
        if self._ready:
            self._send()

    def _send(self) -> None:
        emit(self.ctx, "agent.delta", {"turn": self.turn, "text": self._ready})
        self.sent += 1
        self._ready = ""

    def _held_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some secret value."""
        best = 0
        for value in self._secrets:
            for n in range(min(len(value) - 1, len(text)), best, -1):
                if text.endswith(value[:n]):
                    best = n
                    break
        return best

