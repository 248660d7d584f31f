"""`agentrun mcp`: an agentrun server's workflows as tools for MCP clients.

Speaks MCP on stdin/stdout (what desktop and IDE clients launch), or streamable HTTP with
`--http HOST:PORT`, and talks to the agentrun server over gRPC like the other client commands
(`--server`, `--api-key`). The tools are agentrun.integrations.mcp.gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from agentrun.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agentrun.cli.client_options import add_client_options, error_line

DEFAULT_WAIT = 60.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mcp",
        help="serve the server's workflows as MCP tools (stdio, or --http)",
        description=(
            "An MCP server whose tools are the workflows of an agentrun server: a call starts an "
            "execution and returns its output, or its execution id when it runs longer than "
            "--wait seconds (then the get_execution tool polls it). Stdio by default."
        ),
    )
    add_client_options(p, json_output=False)
    p.add_argument(
        "--workflow",
        action="append",
        default=[],
        metavar="NAME",
        help="offer this workflow (repeat for more; default: every DAG workflow)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long a call waits for its execution to end (default {DEFAULT_WAIT:g})",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio",
    )
    p.set_defaults(handler=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    from agentrun.integrations.mcp import require_sdk

    try:
        require_sdk("agentrun mcp")
    except ValueError as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not 0 < args.wait <= 3600:
        print("agentrun: --wait: expected seconds, more than 0 and at most 3600", file=sys.stderr)
        return EXIT_USAGE
    listen = None
    if args.http:
        host, _, port = args.http.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            print(f"agentrun: --http: expected HOST:PORT, not {args.http!r}", file=sys.stderr)
            return EXIT_USAGE
        listen = (host.strip("[]"), int(port))
    return asyncio.run(_serve(args, listen))


async def _serve(args: argparse.Namespace, listen: tuple[str, int] | None) -> int:
    from agentrun.client import AgentrunError, AsyncClient
    from agentrun.integrations.mcp.gateway import Gateway, GatewayOptions, selected_missing

    async with AsyncClient(args.server, api_key=args.api_key) as client:
        gateway = Gateway(client, GatewayOptions(workflows=tuple(args.workflow), wait=args.wait))
        try:  # the server must answer before a client is told there are tools
            tools = await gateway.tools()
        except AgentrunError as exc:
            print(f"agentrun: {error_line(exc, args)}", file=sys.stderr)
            return EXIT_FAILED
        missing = selected_missing(args.workflow, tools)
        if missing:
            print(f"agentrun mcp: no workflow named {', '.join(missing)} (yet)", file=sys.stderr)
        if listen is None:
            await _stdio(gateway)
            return EXIT_OK
        return await _http(gateway, *listen, offered=len(tools))


async def _stdio(gateway: Any) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await gateway.server.run(read, write, gateway.server.create_initialization_options())


async def _http(gateway: Any, host: str, port: int, *, offered: int) -> int:
    """The socket is bound and listening before the line that names it is printed: a client
    (or a script waiting for that line) that connects at once is queued, not refused, however
    long uvicorn then takes to start. A port that cannot be had is said in one line."""
    import uvicorn

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        print(
            f"agentrun mcp: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_FAILED
    with sock:
        app = gateway.server.streamable_http_app(host=host)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        print(f"agentrun mcp: {offered} tools at http://{host}:{port}/mcp", file=sys.stderr)
        await server.serve(sockets=[sock])
    return EXIT_OK
