"""MCP (Model Context Protocol) with the official `mcp` SDK, both ways.

- A tool source: the servers under `mcp_servers:` lend their tools to the registry as
  `mcp.<server>.<tool>` (`source.McpSource`; config in `config.py`, docs/integrations.md).
- A server: `agentrun mcp` offers an agentrun server's workflows to MCP clients as tools
  (`gateway.py`, docs/cli.md).

The SDK is an optional dependency (`pip install 'agentrun[mcp]'`); `require_sdk()` says so
clearly when a config names MCP servers and it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrun.integrations.mcp.source import McpSource
    from agentrun.integrations.mcp.tool import McpTool

INSTALL_HINT = "install it with: pip install 'agentrun[mcp]'"


def require_sdk(what: str) -> None:
    """ValueError naming `what` when the `mcp` package cannot be imported."""
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"{what} needs the `mcp` package, which is not installed ({exc}); {INSTALL_HINT}"
        ) from None


def load_mcp_tools(
    config: Mapping[str, Any], *, secrets: Mapping[str, str]
) -> tuple[McpSource, list[McpTool]]:
    """Connects to the servers under `mcp_servers:` and returns the source (close it at
    shutdown) and their tools."""
    require_sdk("mcp_servers")
    from agentrun.integrations.mcp.source import McpSource

    source = McpSource.from_config(config, secrets=secrets)
    return source, source.load_tools()


__all__ = ["INSTALL_HINT", "load_mcp_tools", "require_sdk"]
