"""What a provider needs to let a model call registered tools.

`AgentTools` offers the tools an agent node lists (`agent.tools`) to the model under names the
chat-completions API accepts, validates the model's arguments against each tool's JSON Schema,
calls the tool with an idempotency key derived from the node's (`KEY/tools/TURN.INDEX`, so a
retried node repeats the same keys for the same calls) and turns the outcome, success or
failure, into what goes back to the model. Each call is reported as `agent.tool_call` and
`agent.tool_result` events.

Streamed text needs nothing here: a provider emits each piece as `agent.delta` {turn, text}
and the engine coalesces, numbers and redacts them (agentrun/engine/runtime/deltas.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import jsonschema

from agentrun.engine.ports import CallContext, ToolFailure, ToolRegistry

MAX_RESULT_CHARS = 32_000
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def emit(ctx: CallContext, type_: str, data: dict[str, Any]) -> None:
    if ctx.emit is not None:
        ctx.emit(type_, data)


class AgentTools:
    def __init__(
        self, registry: ToolRegistry | None, names: Iterable[str], ctx: CallContext
    ) -> None:
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
            specs.append(
                {
                    "type": "function",
                    "function": {
                        "name": wire,
                        "description": (tool.description or name)[:1024],
                        "parameters": schema,
                    },
                }
            )
        return specs

    async def call(
        self, wire: str, raw_args: Any, *, turn: int, index: int, call_id: str = ""
    ) -> tuple[bool, Any]:
        """Runs one call the model asked for: (ok, result or error) for the model to read."""
        name = self._by_wire.get(wire) or (wire if wire in self._tools else None)
        emit(
            self.ctx,
            "agent.tool_call",
            {"turn": turn, "index": index, "tool": name or wire, "call_id": call_id},
        )
        ok, value = await self._call(name, wire, raw_args, turn, index)
        data: dict[str, Any] = {"turn": turn, "index": index, "tool": name or wire, "ok": ok}
        if not ok:
            data["error"] = value
        emit(self.ctx, "agent.tool_result", data)
        return ok, value

    async def _call(
        self, name: str | None, wire: str, raw_args: Any, turn: int, index: int
    ) -> tuple[bool, Any]:
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
            errors = sorted(
                jsonschema.Draft202012Validator(tool.args_schema).iter_errors(args),
                key=lambda e: list(e.path),
            )
            if errors:
                e = errors[0]
                where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in e.path)
                return False, {
                    "type": "invalid_args",
                    "message": f"args{where}: {e.message}",
                    "field": f"args{where}",
                }
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
