"""The `core.*` tools: always registered, no I/O, for composing and testing workflows."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure


class Echo(Tool):
    name = "core.echo"
    description = "Returns its args."
    effect = Effect.PURE
    synchronous = True

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return args


class Sleep(Tool):
    name = "core.sleep"
    description = "Sleeps `seconds`, then returns {slept: seconds}; cancellable."
    args_schema = {
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {"type": "number", "minimum": 0}},
    }
    effect = Effect.IDEMPOTENT

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await asyncio.sleep(args["seconds"])
        return {"slept": args["seconds"]}


class Fail(Tool):
    name = "core.fail"
    description = (
        "Fails with error `type` until the attempt number reaches `succeed_on_attempt`"
        " (absent: always), then returns {attempt: N}."
    )
    args_schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "message": {"type": "string"},
            "succeed_on_attempt": {"type": "integer", "minimum": 1},
            "retry_after": {"type": "number", "minimum": 0},
        },
    }
    effect = Effect.IDEMPOTENT
    synchronous = True

    async def call(self, args: Any, ctx: CallContext) -> Any:
        args = args or {}
        goal = args.get("succeed_on_attempt")
        if goal is not None and ctx.attempt >= goal:
            return {"attempt": ctx.attempt}
        raise ToolFailure(
            args.get("type", "tool_error"),
            args.get("message", f"core.fail failed attempt {ctx.attempt}"),
            details={"attempt": ctx.attempt},
            retry_after=args.get("retry_after"),
        )


def core_tools() -> list[Tool]:
    return [Echo(), Sleep(), Fail()]
