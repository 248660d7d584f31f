"""Moved to agentrun.integrations.agents.mock; kept so that old imports still work."""

from agentrun.integrations.agents.mock import MockProvider

__all__ = ["MockProvider"]
