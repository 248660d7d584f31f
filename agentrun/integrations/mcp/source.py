"""The MCP tool source: connects to the configured servers, lists their tools, closes them.

Sessions open when the config is loaded (`default_tools`, so at server start): the tools must
be in the registry before a workflow naming them is validated, and a server that cannot be
reached stops the start with its name and the reason, rather than failing calls later. The
list of tools is read once; one session per server is then shared by every call and reopened
when it breaks (`connection.Connection`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
from collections.abc import Mapping
from typing import Any

from agentrun.integrations.mcp.config import ServerSpec, parse_servers
from agentrun.integrations.mcp.connection import Connection, ConnectionLost, ServerError
from agentrun.integrations.mcp.loop import LoopThread
from agentrun.integrations.mcp.tool import McpTool

log = logging.getLogger("agentrun.integrations.mcp")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\Z")


class McpSource:
    """Every configured MCP server's connection, on one background loop."""

    def __init__(self, specs: list[ServerSpec]) -> None:
        self.specs = specs
        self.loop = LoopThread()
        self.connections = {spec.name: Connection(spec) for spec in specs}
        self._closed = False
        atexit.register(self.close)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, secrets: Mapping[str, str]) -> McpSource:
        return cls(parse_servers(config.get("mcp_servers"), secrets=secrets))

    def load_tools(self) -> list[McpTool]:
        """Connects to every server (at once) and returns their tools; ValueError naming the
        server that could not be reached or listed."""
        try:
            listed = self.loop.run_sync(self._list_all(), timeout=self._list_timeout())
        except TimeoutError:
            self.close()
            raise ValueError("mcp_servers: listing the tools took too long") from None
        except ValueError:
            self.close()
            raise
        tools: list[McpTool] = []
        for spec, remotes in zip(self.specs, listed, strict=True):
            for remote in remotes:
                if spec.include is not None and remote.name not in spec.include:
                    continue
                if not _TOOL_NAME.match(remote.name):
                    log.warning(
                        "%s: tool %r left out: its name cannot be part of a tool name",
                        spec.where,
                        remote.name,
                    )
                    continue
                tools.append(
                    McpTool(
                        server=spec.name,
                        remote=remote,
                        connection=self.connections[spec.name],
                        loop=self.loop,
                        effect=spec.effects.get(remote.name),
                    )
                )
            if spec.include is not None:
                missing = spec.include - {r.name for r in remotes}
                if missing:
                    self.close()
                    raise ValueError(
                        f"mcp_servers.{spec.name}.include: the server has no tool "
                        f"{', '.join(sorted(missing))}"
                    )
        return tools

    async def _list_all(self) -> list[list[Any]]:
        results = await asyncio.gather(
            *(self._list(spec) for spec in self.specs), return_exceptions=True
        )
        listed: list[list[Any]] = []
        for spec, result in zip(self.specs, results, strict=True):
            if isinstance(result, BaseException):
                raise ValueError(f"mcp_servers.{spec.name}: {result}")
            listed.append(result)
        return listed

    async def _list(self, spec: ServerSpec) -> list[Any]:
        try:
            return await self.connections[spec.name].list_tools()
        except ServerError as exc:
            raise ConnectionLost(f"{spec.where} refused to list its tools: {exc.message}") from None

    def _list_timeout(self) -> float:
        return max((s.connect_timeout for s in self.specs), default=30.0) * 2

    async def aclose(self) -> None:
        """Closes every session (stdio servers are stopped) and the loop; for async callers."""
        if self._closed:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if not self.loop.loop.is_closed():
            try:
                self.loop.run_sync(self._close_all(), timeout=15)
            except Exception as exc:
                log.warning("closing MCP sessions: %s", exc)
            self.loop.stop()

    async def _close_all(self) -> None:
        await asyncio.gather(
            *(c.close() for c in self.connections.values()), return_exceptions=True
        )
