"""Implementations of the engine's ports: tools, the tool registry, agent providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentrun.engine.ports import AgentProvider, AgentProviders
from agentrun.integrations.core_tools import core_tools
from agentrun.integrations.mock_agent import MockProvider
from agentrun.integrations.registry import Registry


class Providers(AgentProviders):
    def __init__(self, providers: list[AgentProvider]) -> None:
        self._by_name = {p.name: p for p in providers}

    def get(self, provider: str) -> AgentProvider | None:
        return self._by_name.get(provider)


def default_tools(config: Mapping[str, Any] | None = None) -> Registry:
    """The built-in tools; more come from the tool registry issue's config and entry points."""
    return Registry(core_tools())


def default_agents(config: Mapping[str, Any] | None = None) -> Providers:
    """Agent providers from server config: `mock: {responses: {NAME: ...}}`."""
    mock_config = (config or {}).get("mock") or {}
    return Providers([MockProvider(mock_config.get("responses"))])


__all__ = ["Registry", "Providers", "MockProvider", "default_tools", "default_agents"]
