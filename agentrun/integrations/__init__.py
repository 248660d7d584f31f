"""Implementations of the engine's ports: tools, the tool registry, agent providers, secrets,
and the event buses. docs/integrations.md describes the config keys.

Whoever builds an engine from a config file (server, CLI):
    secrets = load_secrets(config)
    tools = default_tools(config)
    agents = default_agents(config, tools=tools)
    engine = Engine(store, tools=tools, agents=agents, config=EngineConfig(secrets=secrets, ...))
    bus = await attach(engine, config)      # log redaction + the event bus; await bus.stop() at the end
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentrun.engine.ports import ToolRegistry
from agentrun.integrations.agents import Providers, build_providers
from agentrun.integrations.agents.mock import MockProvider
from agentrun.integrations.agents.openai import OpenAIProvider
from agentrun.integrations.core_tools import core_tools
from agentrun.integrations.registry import FunctionTool, Registry, ToolDefinitionError
from agentrun.integrations.secrets import load_secrets, redact_logging
from agentrun.integrations.tools import EmailSend, HttpRequest, SqlQuery
from agentrun.integrations.util import expand_env

_BUILTIN: dict[str, type[HttpRequest | SqlQuery | EmailSend]] = {
    "http.request": HttpRequest,
    "sql.query": SqlQuery,
    "email.send": EmailSend,
}


def default_tools(config: Mapping[str, Any] | None = None) -> Registry:
    """The built-in tools (`core.*`, `http.request`, `sql.query`, `email.send`, configured by
    `tools.<name>`), tools from entry points (group `agentrun.tools`, unless
    `tools.entry_points: false`; options under `tools.<entry point name>`), tools named in
    `tools.register`, and the tools of the MCP servers under `mcp_servers:` (connected now;
    `await registry.aclose()` closes them)."""
    section = expand_env(dict((config or {}).get("tools") or {}))
    registry = Registry(core_tools())
    for name, cls in _BUILTIN.items():
        registry.register(cls(section.get(name)))
    from_eps: list[str] = []
    if section.get("entry_points", True):
        from importlib.metadata import entry_points

        from_eps = [ep.name for ep in entry_points(group="agentrun.tools")]
        registry.load_entry_points(config=section)
    registry.load_from_config(section.get("register") or [])
    unknown = set(section) - set(_BUILTIN) - {"entry_points", "register"} - set(from_eps)
    if unknown:
        raise ValueError(f"tools: unknown keys {', '.join(sorted(unknown))}")
    if (config or {}).get("mcp_servers"):
        _add_mcp_tools(registry, config or {})
    return registry


def _add_mcp_tools(registry: Registry, config: Mapping[str, Any]) -> None:
    """The tools of the servers under `mcp_servers:` (agentrun.integrations.mcp), whose
    sessions `registry.aclose()` closes."""
    from agentrun.integrations.mcp import load_mcp_tools

    source, tools = load_mcp_tools(config, secrets=load_secrets(config))
    registry.on_close(source.aclose)
    try:
        for tool in tools:
            registry.register(tool)
    except ToolDefinitionError:
        source.close()
        raise


def default_agents(
    config: Mapping[str, Any] | None = None, *, tools: ToolRegistry | None = None
) -> Providers:
    """Agent providers from config: `mock`, `openai` and the named ones under `agents:`.
    `tools` is the registry the models' tool calls use; pass the engine's. Without it, the
    registry `default_tools(config)` builds is used (made on first use)."""
    source: Any = tools
    if source is None:
        cache: list[Registry] = []

        def source() -> Registry:
            if not cache:
                cache.append(default_tools(config))
            return cache[0]

    return build_providers(config, tools=source, secrets=load_secrets(config))


async def attach(engine: Any, config: Mapping[str, Any] | None = None) -> Any:
    """Scrubs the engine's secrets from logs and starts the event bus the config selects
    (`events:`); returns the running publisher (or None when no bus is configured). Call
    `await publisher.stop()` before closing the store."""
    redact_logging(engine.secrets.values())
    from agentrun.integrations.events import publisher_from_config

    publisher = publisher_from_config(engine, config or {})
    if publisher is not None:
        await publisher.start()
    return publisher


__all__ = [
    "FunctionTool",
    "MockProvider",
    "OpenAIProvider",
    "Providers",
    "Registry",
    "ToolDefinitionError",
    "attach",
    "default_agents",
    "default_tools",
    "load_secrets",
    "redact_logging",
]
