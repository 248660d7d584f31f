"""A real MCP server, written with the `mcp` SDK, that tests/mcp serves to agentrun.

Run as a stdio server (`python toolserver.py`) or over streamable HTTP
(`python toolserver.py --http 127.0.0.1:PORT`). Its tools cover what the MCP tool source maps:
annotations (read-only, idempotent, destructive, none), structured and unstructured results,
`isError` results, progress notifications, and a call that blocks until the process is killed
(the reconnect test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("agentrun-test-tools")
STATE: dict[str, Any] = {}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> dict[str, int]:
    """Adds two integers."""
    return {"sum": a + b}


@server.tool(
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
)
def put(key: str, value: str) -> dict[str, Any]:
    """Sets key to value (the same call twice changes nothing more)."""
    STATE[key] = value
    return {"key": key, "value": value, "pid": os.getpid()}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def get(key: str) -> dict[str, Any]:
    """The value `put` set for key (null when none)."""
    return {"key": key, "value": STATE.get(key)}


@server.tool(
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)
)
def drop(key: str) -> str:
    """Deletes a key."""
    return "dropped" if STATE.pop(key, None) is not None else "absent"


@server.tool()
def shout(text: str) -> str:
    """Returns the text in capitals (no annotations, unstructured text)."""
    return text.upper()


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def refuse(reason: str) -> str:
    """Always fails: the result has isError set."""
    raise ToolError(f"refused: {reason}")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def count(steps: int, ctx: Context) -> dict[str, int]:
    """Counts to `steps`, reporting progress after each step."""
    for n in range(1, steps + 1):
        await ctx.report_progress(n, steps, f"step {n}")
        await asyncio.sleep(0.01)
    return {"counted": steps}


@server.tool(
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
)
async def hang_once(marker: str) -> dict[str, Any]:
    """The first call (no file at `marker`) writes this process's pid there and never returns;
    later calls return at once: the test kills the process during the first."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        await asyncio.Event().wait()
    return {"pid": os.getpid(), "first_pid": int(path.read_text())}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def call_meta(ctx: Context) -> dict[str, Any]:
    """The `io.agentrun/...` entries of this request's `_meta`."""
    meta = dict(ctx.request_context.meta or {})
    return {k: v for k, v in meta.items() if k.startswith("io.agentrun/")}


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
async def consume_once(marker: str) -> dict[str, Any]:
    """As hang_once, but destructive: agentrun must not call it again after a lost call."""
    return await hang_once(marker)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def nap(seconds: float, marker: str) -> dict[str, Any]:
    """Sleeps; writes "cancelled" to `marker` when the client cancels the request."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")
        raise
    return {"slept": seconds}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami() -> dict[str, int]:
    """This server process's pid."""
    return {"pid": os.getpid()}


def http_app(token: str | None) -> Any:
    """The streamable HTTP app; with `token`, requests without `Authorization: Bearer TOKEN`
    are refused (401), so a test sees the headers agentrun sends."""
    app = server.streamable_http_app()
    if not token:
        return app

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"missing or wrong token"})
                return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", metavar="HOST:PORT")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.http:
        import uvicorn

        host, _, port = args.http.rpartition(":")
        uvicorn.run(http_app(args.token), host=host, port=int(port), log_level="warning")
    else:
        server.run()


if __name__ == "__main__":
    main()
