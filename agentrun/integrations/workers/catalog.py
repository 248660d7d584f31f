"""Remote tools in the tool registry, and what a worker may register.

A worker's registration declares tools (name, schemas, flags). Each declaration is stored
(`worker_tools`) and every replica installs a `RemoteTool` of that name in its registry, so
that workflows using it validate on any replica, also while no worker serving it is
connected (its calls then wait, READY, for one). A `RemoteTool` is called like any tool,
through the engine's step invoker; its `call` hands the call to `RemoteCalls`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from agentrun.engine.errors import Diagnostic
from agentrun.engine.labels import label_problems
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations.registry import Registry, valid_tool_name
from agentrun.integrations.workers.settings import MAX_SLOTS
from agentrun.storage.worker_calls import WorkerCallStore

if TYPE_CHECKING:
    from agentrun.integrations.workers.calls import RemoteCalls

log = logging.getLogger("agentrun.integrations.workers")

MAX_TOOLS = 1000
MAX_TEXT = 256
MAX_DESCRIPTION = 10_000


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool a worker registers (WorkerTool in worker_service.proto)."""

    name: str
    description: str = ""
    args_schema: dict[str, Any] | None = None
    result_schema: dict[str, Any] | None = None
    irreversible: bool = False
    idempotent: bool = False
    # At most this many of its calls at once on the worker; 0: the worker's slots.
    max_concurrent_calls: int = 0
    version: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "args_schema": self.args_schema,
            "result_schema": self.result_schema,
            "irreversible": self.irreversible,
            "idempotent": self.idempotent,
            "max_concurrent_calls": self.max_concurrent_calls,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Registration:
    """What a worker declares when it connects (RegisterWorker)."""

    tools: tuple[ToolSpec, ...]
    max_concurrent_calls: int
    labels: Mapping[str, str] = field(default_factory=dict)
    display_name: str = ""
    version: str = ""


def effect_of(definition: Mapping[str, Any]) -> Effect:
    """`irreversible` → never retried automatically; `idempotent` → safe to repeat; neither →
    compensable (retries allowed: the worker said nothing against them)."""
    if definition.get("irreversible"):
        return Effect.IRREVERSIBLE
    if definition.get("idempotent"):
        return Effect.IDEMPOTENT
    return Effect.COMPENSABLE


class RemoteTool(Tool):
    """A tool served by remote workers: its schemas and effect are the last declaration's."""

    def __init__(self, name: str, definition: Mapping[str, Any], calls: RemoteCalls) -> None:
        self.name = name
        self._calls = calls
        self.update(definition)

    def update(self, definition: Mapping[str, Any]) -> None:
        self.definition = dict(definition)
        self.description = str(definition.get("description") or "")
        self.args_schema = definition.get("args_schema") or None
        self.result_schema = definition.get("result_schema") or None
        self.effect = effect_of(definition)

    async def call(self, args: Any, ctx: CallContext) -> Any:
        return await self._calls.call(self, args, ctx)


class Catalog:
    """The remote tools of the store, installed in a registry (this replica's engine's)."""

    def __init__(self, registry: Registry, repo: WorkerCallStore, calls: RemoteCalls) -> None:
        self._registry = registry
        self._repo = repo
        self._calls = calls

    def is_local(self, name: str) -> bool:
        """A tool of this name runs in the server's process (no worker may take its name)."""
        tool = self._registry.get(name)
        return tool is not None and not isinstance(tool, RemoteTool)

    async def refresh(self) -> None:
        """Installs every stored declaration (new names, changed schemas)."""
        for declaration in await self._repo.list_tools():
            self.install(declaration.name, declaration.definition)

    def install(self, name: str, definition: Mapping[str, Any]) -> None:
        existing = self._registry.get(name)
        if isinstance(existing, RemoteTool):
            existing.update(definition)
        elif existing is None:
            try:
                self._registry.register(RemoteTool(name, definition, self._calls))
            except ValueError as exc:  # a declaration stored by an older version, say
                log.warning("remote tool %r not installed: %s", name, exc)
        else:
            log.warning("remote tool %r is shadowed by the in-process tool of that name", name)


def check_registration(
    registration: Registration, catalog: Catalog, path: str = "register"
) -> list[Diagnostic]:
    """Every problem of a registration, each with the field it is in (`register.tools[0].name`)."""
    problems: list[Diagnostic] = []

    def bad(where: str, message: str) -> None:
        problems.append(Diagnostic(f"{path}.{where}", message))

    if not 1 <= registration.max_concurrent_calls <= MAX_SLOTS:
        bad(
            "max_concurrent_calls",
            f"must be between 1 and {MAX_SLOTS}, not {registration.max_concurrent_calls}",
        )
    if len(registration.display_name) > MAX_TEXT:
        bad("display_name", f"at most {MAX_TEXT} characters")
    if len(registration.version) > MAX_TEXT:
        bad("version", f"at most {MAX_TEXT} characters")
    problems.extend(label_problems(registration.labels, f"{path}.labels"))
    if not registration.tools:
        bad("tools", "a worker serves at least one tool")
    elif len(registration.tools) > MAX_TOOLS:
        bad("tools", f"at most {MAX_TOOLS} tools")
    seen: dict[str, int] = {}
    for index, tool in enumerate(registration.tools):
        _check_tool(tool, f"tools[{index}]", index, seen, catalog, registration, bad)
    return problems


def _check_tool(
    tool: ToolSpec,
    where: str,
    index: int,
    seen: dict[str, int],
    catalog: Catalog,
    registration: Registration,
    bad: Any,
) -> None:
    if not tool.name:
        bad(f"{where}.name", "is required")
    elif not valid_tool_name(tool.name):
        bad(f"{where}.name", f"{tool.name!r} must be dotted words such as billing.refund")
    elif tool.name in seen:
        bad(f"{where}.name", f"{tool.name!r} is registered twice (also tools[{seen[tool.name]}])")
    elif catalog.is_local(tool.name):
        bad(f"{where}.name", f"{tool.name!r} is a tool of the server itself; choose another name")
    else:
        seen[tool.name] = index
    for attr in ("args_schema", "result_schema"):
        schema = getattr(tool, attr)
        if schema is None:
            continue
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            inner = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in exc.path)
            bad(f"{where}.{attr}{inner}", f"not a valid JSON Schema: {exc.message}")
    if tool.irreversible and tool.idempotent:
        bad(f"{where}.irreversible", "a tool cannot be both irreversible and idempotent")
    if not 0 <= tool.max_concurrent_calls <= MAX_SLOTS:
        bad(f"{where}.max_concurrent_calls", f"must be between 0 and {MAX_SLOTS}")
    if len(tool.description) > MAX_DESCRIPTION:
        bad(f"{where}.description", f"at most {MAX_DESCRIPTION} characters")
    if len(tool.version) > MAX_TEXT:
        bad(f"{where}.version", f"at most {MAX_TEXT} characters")
