"""The tool registry: tools by name, registered in Python, by entry point, or from server config.

A tool has a name, a description, JSON Schemas for its args and result, and an effect class
(`pure`, `idempotent`, `compensable`, `irreversible`). Three ways in:

- Python: `registry.register(MyTool())`, or `@registry.tool(...)` on an async function;
- entry points: a distribution declares `[project.entry-points."agentrun.tools"]`
  `name = "pkg.module:factory"`, where the object is a Tool, a Tool subclass, or a callable
  returning a Tool or a list of them (called with the tool's config section when it takes an
  argument);
- server config: `tools: {register: ["pkg.module:factory", {factory: ..., options: {...}}]}`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import jsonschema

from agentrun.engine.ports import CallContext, Effect, Tool, ToolRegistry

log = logging.getLogger("agentrun.integrations")

ENTRY_POINT_GROUP = "agentrun.tools"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*\Z")


def valid_tool_name(name: str) -> bool:
    """Dotted words such as `team.lookup`: every tool's name, in-process or remote."""
    return bool(_NAME.match(name))


class ToolDefinitionError(ValueError):
    """A tool that cannot be registered: bad name, bad schema, a name taken."""


class FunctionTool(Tool):
    """A tool made from an async function `fn(args, ctx)`."""

    def __init__(
        self,
        fn: Callable[[Any, CallContext], Awaitable[Any]],
        *,
        name: str,
        description: str = "",
        args_schema: Mapping[str, Any] | None = None,
        result_schema: Mapping[str, Any] | None = None,
        effect: Effect | str = Effect.IDEMPOTENT,
    ) -> None:
        self._fn = fn
        self.name = name
        self.description = description or (inspect.getdoc(fn) or "")
        self.args_schema = args_schema
        self.result_schema = result_schema
        self.effect = Effect(effect)

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return await self._fn(args, ctx)


def check_tool(tool: Any) -> Tool:
    """Refuses what the engine could not use safely, with the reason."""
    if not isinstance(tool, Tool):
        raise ToolDefinitionError(f"{tool!r} is not an agentrun Tool")
    name = getattr(tool, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolDefinitionError(f"tool name {name!r} must be dotted words such as team.lookup")
    try:
        tool.effect = Effect(tool.effect)
    except ValueError:
        raise ToolDefinitionError(
            f"tool {name!r}: effect {tool.effect!r} is not one of {', '.join(e.value for e in Effect)}"
        ) from None
    for attr in ("args_schema", "result_schema"):
        schema = getattr(tool, attr, None)
        if schema is None:
            continue
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(
                f"tool {name!r}: {attr} is not a valid JSON Schema: {exc.message}"
            ) from None
    return tool


class Registry(ToolRegistry):
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        for tool in tools:
            self.register(tool)

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Runs `close` at `aclose()`: tool sources that hold connections (MCP sessions)
        release them when whoever built the registry shuts down."""
        self._closers.append(close)

    async def aclose(self) -> None:
        """Releases what the registered sources hold; the tools fail after this."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # one source must not keep the others open
                log.exception("closing a tool source failed")

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        check_tool(tool)
        if tool.name in self._tools and not replace:
            raise ToolDefinitionError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(
        self,
        name: str,
        *,
        description: str = "",
        args_schema: Mapping[str, Any] | None = None,
        result_schema: Mapping[str, Any] | None = None,
        effect: Effect | str = Effect.IDEMPOTENT,
    ) -> Callable[[Callable[[Any, CallContext], Awaitable[Any]]], FunctionTool]:
        """Decorator: registers an async function `fn(args, ctx)` as a tool."""

        def wrap(fn: Callable[[Any, CallContext], Awaitable[Any]]) -> FunctionTool:
            made = FunctionTool(
                fn,
                name=name,
                description=description,
                args_schema=args_schema,
                result_schema=result_schema,
                effect=effect,
            )
            self.register(made)
            return made

        return wrap

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def describe(self) -> list[dict[str, Any]]:
        """Every tool as {name, description, args_schema, result_schema, effect}, by name
        (what a ListTools call returns)."""
        return [describe_tool(self._tools[n]) for n in self.names()]

    # ----------------------------------------------------------------- loading
    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, *, config: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Registers the tools that installed distributions declare under `group`; returns
        their names. A broken entry point is an error naming it, never silently skipped."""
        added: list[str] = []
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ToolDefinitionError(
                    f"entry point {ep.name} = {ep.value}: {type(exc).__name__}: {exc}"
                ) from None
            for tool in _materialise(obj, (config or {}).get(ep.name), f"entry point {ep.name}"):
                self.register(tool)
                added.append(tool.name)
        return added

    def load_from_config(self, entries: Iterable[Any]) -> list[str]:
        """`tools.register` entries: "pkg.module:attr" or {factory: "pkg.module:attr", options: {...}}."""
        added: list[str] = []
        for n, entry in enumerate(entries):
            where = f"tools.register[{n}]"
            if isinstance(entry, str):
                target, options = entry, None
            elif isinstance(entry, Mapping) and isinstance(entry.get("factory"), str):
                unknown = set(entry) - {"factory", "options"}
                if unknown:
                    raise ToolDefinitionError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
                target, options = entry["factory"], entry.get("options")
            else:
                raise ToolDefinitionError(
                    f"{where}: expected 'module:attr' or {{factory, options}}"
                )
            obj = _import(target, where)
            for tool in _materialise(obj, options, where):
                self.register(tool)
                added.append(tool.name)
        return added


def describe_tool(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description or "",
        "args_schema": dict(tool.args_schema) if tool.args_schema is not None else None,
        "result_schema": dict(tool.result_schema) if tool.result_schema is not None else None,
        "effect": Effect(tool.effect).value,
    }


def _import(target: str, where: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ToolDefinitionError(f"{where}: {target!r} must be 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ToolDefinitionError(f"{where}: cannot import {target!r}: {exc}") from None
    return obj


def _materialise(obj: Any, options: Any, where: str) -> list[Tool]:
    if isinstance(obj, Tool):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, Tool):
        cls: Callable[..., Any] = obj  # a Tool class whose constructor takes its options
        made: Any = cls(options) if options is not None else cls()
    elif callable(obj):
        try:
            takes_options = bool(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            takes_options = False
        made = obj(options or {}) if takes_options else obj()
    else:
        raise ToolDefinitionError(f"{where}: {obj!r} is neither a Tool nor a factory of tools")
    if isinstance(made, Tool):
        return [made]
    if isinstance(made, Iterable):
        tools = list(made)
        for t in tools:
            if not isinstance(t, Tool):
                raise ToolDefinitionError(f"{where}: factory returned {t!r}, not a Tool")
        return tools
    raise ToolDefinitionError(f"{where}: factory returned {made!r}, not a Tool")
