"""The tool registry: tools by name, registered in Python or from server config."""

from __future__ import annotations

from collections.abc import Iterable

from agentrun.engine.ports import Tool, ToolRegistry


class Registry(ToolRegistry):
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)
