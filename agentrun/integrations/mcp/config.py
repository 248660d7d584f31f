"""`mcp_servers:` in the config file: which MCP servers lend their tools, and how to reach them.

```yaml
mcp_servers:
  fs:                                   # tools appear as mcp.fs.<tool>
    command: npx                        # a stdio server: the command, its args, env and cwd
    args: [-y, "@modelcontextprotocol/server-filesystem", /srv/data]
    env: {LOG_LEVEL: warn, API_KEY: {secret: fs_key}}
    include: [read_text_file, list_directory]   # only these tools (default: all)
  search:
    url: https://mcp.example.com/mcp    # a streamable HTTP server
    headers: {Authorization: {secret: search_token, prefix: "Bearer "}}
    connect_timeout: 30s                # to start, connect and list tools (default 30s)
    effects: {index_page: idempotent}   # overrides what the tool's annotations say
```

An `env` or `headers` value is a string or `{secret: NAME, prefix: TEXT}`, read from the
secret store (`secrets:`, `AGENTRUN_SECRET_*`, ...), so tokens stay out of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentrun.engine.ports import Effect
from agentrun.integrations.util import expand_env, parse_seconds

SECTION = "mcp_servers"
DEFAULT_CONNECT_TIMEOUT = 30.0
_SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*\Z")
_KEYS = {"command", "args", "env", "cwd", "url", "headers", "connect_timeout", "include", "effects"}


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One configured MCP server: a stdio command or a streamable HTTP URL."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    include: frozenset[str] | None = None
    effects: Mapping[str, Effect] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The server as error messages name it (never its headers or env: they hold secrets)."""
        target = self.url if self.url else " ".join((self.command or "", *self.args))
        return f"MCP server {self.name!r} ({target})"


def parse_servers(section: Any, *, secrets: Mapping[str, str]) -> list[ServerSpec]:
    """Every server under `mcp_servers:`; ValueError naming the key and the problem."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise ValueError(f"{SECTION}: expected a mapping of server names")
    return [_server(str(name), spec, secrets) for name, spec in section.items()]


def _server(name: str, spec: Any, secrets: Mapping[str, str]) -> ServerSpec:
    where = f"{SECTION}.{name}"
    if not _SERVER_NAME.match(name):
        raise ValueError(f"{where}: a server name is a letter, then letters, digits, '_' or '-'")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping with `command` or `url`")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    spec = expand_env(dict(spec))
    command, url = spec.get("command"), spec.get("url")
    if (command is None) == (url is None):
        raise ValueError(
            f"{where}: give exactly one of `command` (stdio) or `url` (streamable HTTP)"
        )
    options: dict[str, Any] = {"name": name}
    if command is not None:
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"{where}.command: expected a non-empty string")
        for key in ("url", "headers"):
            if key in spec:
                raise ValueError(f"{where}.{key}: only for a `url` server, not a `command` one")
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            raise ValueError(f"{where}.args: expected a list of strings")
        cwd = spec.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError(f"{where}.cwd: expected a path")
        options.update(
            command=command,
            args=tuple(str(a) for a in args),
            cwd=cwd,
            env=_values(spec.get("env"), f"{where}.env", secrets),
        )
    else:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}.url: expected an http:// or https:// URL")
        for key in ("args", "env", "cwd"):
            if key in spec:
                raise ValueError(f"{where}.{key}: only for a `command` server, not a `url` one")
        options.update(url=url, headers=_values(spec.get("headers"), f"{where}.headers", secrets))
    if spec.get("connect_timeout") is not None:
        try:
            options["connect_timeout"] = parse_seconds(spec["connect_timeout"])
        except ValueError as exc:
            raise ValueError(f"{where}.connect_timeout: {exc}") from None
        if options["connect_timeout"] <= 0:
            raise ValueError(f"{where}.connect_timeout: must be more than 0")
    include = spec.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(t, str) for t in include):
            raise ValueError(f"{where}.include: expected a list of tool names")
        options["include"] = frozenset(include)
    options["effects"] = _effects(spec.get("effects"), f"{where}.effects")
    return ServerSpec(**options)


def _values(raw: Any, where: str, secrets: Mapping[str, str]) -> dict[str, str]:
    """`{NAME: "text" | {secret: NAME, prefix: TEXT}}` → plain strings."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    out: dict[str, str] = {}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if isinstance(value, Mapping):
            unknown = set(value) - {"secret", "prefix"}
            if unknown or not isinstance(value.get("secret"), str):
                raise ValueError(f"{here}: expected a string or {{secret: NAME, prefix: TEXT}}")
            secret = value["secret"]
            if secret not in secrets:
                raise ValueError(f"{here}: secret {secret!r} is not in the secret store")
            out[str(key)] = str(value.get("prefix") or "") + secrets[secret]
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out[str(key)] = str(value)
        else:
            raise ValueError(f"{here}: expected a string or {{secret: NAME, prefix: TEXT}}")
    return out


def _effects(raw: Any, where: str) -> dict[str, Effect]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping of tool names to effects")
    out: dict[str, Effect] = {}
    for tool, effect in raw.items():
        try:
            out[str(tool)] = Effect(effect)
        except ValueError:
            raise ValueError(
                f"{where}.{tool}: {effect!r} is not one of {', '.join(e.value for e in Effect)}"
            ) from None
    return out
