"""Agent providers: `mock` (offline, deterministic) and `openai` (any OpenAI-compatible
chat-completions endpoint), and named providers from config.

Config:
  mock: {responses: {NAME: VALUE or [VALUES]}}      # the `mock` provider
  openai: {base_url: ..., models: ..., prices: ...}  # the `openai` provider (see openai.py)
  agents:                                            # more providers, by the name workflows use
    support:                                         # support/MODEL
      - {type: openai, requires_env: [OPENAI_BASE_URL, OPENAI_API_KEY], models: {assistant: gpt-4o-mini}}
      - {type: mock, responses: {assistant: [...]}}  # the first candidate whose env is set wins

String values in `openai:` and `agents:` may use `${VAR}` and `${VAR:-default}`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from agentrun.engine.ports import AgentProvider, AgentProviders, ToolRegistry
from agentrun.integrations.agents.mock import MockProvider
from agentrun.integrations.agents.openai import OpenAIConfig, OpenAIProvider
from agentrun.integrations.util import expand_env

ToolSource = ToolRegistry | Callable[[], ToolRegistry | None] | None


class Providers(AgentProviders):
    def __init__(self, providers: list[AgentProvider]) -> None:
        self._by_name = {p.name: p for p in providers}

    def get(self, provider: str) -> AgentProvider | None:
        return self._by_name.get(provider)

    def names(self) -> list[str]:
        return sorted(self._by_name)


def _make(
    name: str,
    spec: Mapping[str, Any],
    *,
    tools: ToolSource,
    secrets: Mapping[str, str],
    env: Mapping[str, str],
    where: str,
) -> AgentProvider:
    kind = spec.get("type", name if name in ("mock", "openai") else None)
    if kind == "openai":
        cfg = OpenAIConfig.from_mapping(spec, where=where, env=env)
        return OpenAIProvider(cfg, name=name, tools=tools, secrets=secrets, env=env)
    if kind == "mock":
        unknown = set(spec) - {"type", "responses", "requires_env"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        return MockProvider(spec.get("responses"), tools=tools, name=name)
    raise ValueError(f"{where}.type: must be openai or mock, not {kind!r}")


def build_providers(
    config: Mapping[str, Any] | None = None,
    *,
    tools: ToolSource = None,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Providers:
    config = config or {}
    env = os.environ if env is None else env
    secrets = dict(secrets or {})
    mock_config = config.get("mock") or {}
    providers: dict[str, AgentProvider] = {
        "mock": MockProvider(mock_config.get("responses"), tools=tools),
        "openai": _make(
            "openai",
            expand_env(config.get("openai") or {}, env),
            tools=tools,
            secrets=secrets,
            env=env,
            where="openai",
        ),
    }
    named = config.get("agents") or {}
    if not isinstance(named, Mapping):
        raise ValueError("agents: expected a mapping of provider names")
    for name, spec in named.items():
        name = str(name)
        if not name or "/" in name:
            raise ValueError(f"agents.{name}: a provider name may not be empty or hold '/'")
        candidates = spec if isinstance(spec, list) else [spec]
        chosen = None
        for i, cand in enumerate(candidates):
            where = f"agents.{name}" + (f"[{i}]" if isinstance(spec, list) else "")
            if not isinstance(cand, Mapping):
                raise ValueError(f"{where}: expected a mapping")
            needs = cand.get("requires_env") or []
            if isinstance(needs, str):
                needs = [needs]
            if all(env.get(v) for v in needs):
                chosen = _make(
                    name,
                    expand_env(dict(cand), env),
                    tools=tools,
                    secrets=secrets,
                    env=env,
                    where=where,
                )
                break
        if chosen is None:
            raise ValueError(f"agents.{name}: no candidate has its requires_env set")
        providers[name] = chosen
    return Providers(list(providers.values()))


__all__ = ["MockProvider", "OpenAIConfig", "OpenAIProvider", "Providers", "build_providers"]
