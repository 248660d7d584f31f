"""What the commands that need no server (`validate`, `graph`, `run`) read and print alike:
the user's files (a workflow, a config) read, loaded and compiled as the server would, a
refusal of any of it as `UserError` (`agentrun: MESSAGE` and its diagnostics, exit 2), and
the JSON text their `--json` prints.

Nothing here imports the engine or the integrations at module level: `agentrun --help` and
the server commands load none of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrun.engine.machine.plan import MachinePlan
    from agentrun.engine.plan import DagPlan

__all__ = [
    "UserError",
    "build_integrations",
    "compile_spec",
    "dump",
    "invalid",
    "json_default",
    "load_config",
    "load_spec",
    "one_line",
    "print_user_error",
    "read_text",
]


class UserError(Exception):
    """A problem with what the user gave us; printed as `agentrun: MESSAGE`, exit 2.
    `lines` are extra lines (diagnostics) printed under it."""

    def __init__(self, message: str, lines: list[str] | None = None, *, kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.lines = list(lines or [])
        self.kind = kind
        self.diagnostics: list[dict[str, str]] = []


def read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None


def load_spec(path: str) -> Any:
    from agentrun.engine import load_workflow
    from agentrun.engine.errors import InvalidWorkflow

    text = read_text(path)
    try:
        return load_workflow(text, filename="<stdin>" if path == "-" else path)
    except InvalidWorkflow as exc:
        raise invalid(exc, f"{path}: invalid workflow") from None


def invalid(exc: Any, message: str, *, kind: str = "invalid_workflow") -> UserError:
    diagnostics = list(getattr(exc, "diagnostics", []) or [])
    lines = [str(d) for d in diagnostics] or [str(getattr(exc, "message", exc))]
    error = UserError(message, lines, kind=kind)
    error.diagnostics = [
        {"path": getattr(d, "path", ""), "message": getattr(d, "message", str(d))}
        for d in diagnostics
    ]
    return error


def load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping, not {type(data).__name__}")
    return data


def build_integrations(config: dict[str, Any], config_path: str | None) -> tuple[Any, Any]:
    """Tools and agent providers from the config file, built as the server builds them."""
    from agentrun import integrations

    try:
        tools = integrations.default_tools(config)
        agents = integrations.default_agents(config, tools=tools)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{config_path or 'config'}: {exc}") from None
    return tools, agents


def compile_spec(spec: Any, tools: Any, agents: Any, path: str) -> DagPlan | MachinePlan:
    from agentrun.engine import compile_workflow
    from agentrun.engine.errors import InvalidWorkflow

    try:
        return compile_workflow(spec, tools=tools, agents=agents)
    except InvalidWorkflow as exc:
        raise invalid(exc, f"{path}: invalid workflow") from None


def print_user_error(exc: UserError) -> None:
    print(f"agentrun: {exc.message}", file=sys.stderr)
    for line in exc.lines:
        print(f"  {line}", file=sys.stderr)


def one_line(text: str) -> str:
    return " ".join(text.split())


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=json_default)


def json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
