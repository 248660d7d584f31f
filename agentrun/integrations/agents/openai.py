"""The `openai` provider: any OpenAI-compatible chat-completions endpoint.

Config (top-level `openai:`, or a named provider under `agents:` with `type: openai`):
  base_url: https://api.openai.com/v1      # default: $OPENAI_BASE_URL, else this
  api_key_secret: openai_api_key           # the key's name in the secret store
  api_key_env: OPENAI_API_KEY              # read from the environment when the store lacks it
  models: {support: gpt-4o-mini}           # aliases a workflow may write (openai/support)
  only_listed_models: false                # true: a model not in `models` fails validation
  temperature: 0.2                         # defaults; a node's own values win
  max_tokens: 1024
  max_turns: 8                             # bound on the tool-calling loop (node: agent.max_turns)
  stream: true                             # default of a node's `agent.stream`: token deltas as `agent.delta` events
  timeout: 60s                             # per HTTP call
  headers: {OpenAI-Organization: org-1}
  prices: {gpt-4o-mini: {prompt: 0.15, completion: 0.60}}   # USD per million tokens

Per call: the tool-calling loop (the model calls the node's `agent.tools`; results go back;
at most `max_turns` model calls, the last one offered no tools), `output_schema` sent as
`response_format: json_schema` and validated (`invalid_output`), usage emitted as an
`agent.usage` event per model call ({prompt_tokens, completion_tokens, total_tokens,
cached_tokens when the endpoint reports them, cost}),
which the engine sums on the node and the execution.
Errors: 429 -> `rate_limited` with Retry-After; 408 and timeouts -> `timeout`; 5xx, other
4xx, transport failures and malformed JSON -> `agent_error`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from agentrun.engine.ports import (
    AgentProvider,
    AgentRequest,
    CallContext,
    ToolFailure,
    ToolRegistry,
)
from agentrun.integrations.agents.tooling import AgentTools, emit, result_text
from agentrun.integrations.util import parse_seconds, retry_after_seconds

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_KEYS = {
    "type",
    "base_url",
    "api_key",
    "api_key_secret",
    "api_key_env",
    "models",
    "only_listed_models",
    "temperature",
    "max_tokens",
    "max_turns",
    "stream",
    "timeout",
    "headers",
    "prices",
    "requires_env",
}


@dataclass(slots=True)
class OpenAIConfig:
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    api_key_secret: str = "openai_api_key"
    api_key_env: str | None = "OPENAI_API_KEY"
    models: dict[str, str] = field(default_factory=dict)
    only_listed_models: bool = False
    temperature: float | None = None
    max_tokens: int = 0
    max_turns: int = 8
    stream: bool = True
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | None,
        *,
        where: str = "openai",
        env: Mapping[str, str] | None = None,
    ) -> OpenAIConfig:
        env = os.environ if env is None else env
        data = dict(data or {})
        unknown = set(data) - _KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        base_url = data.get("base_url") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        prices = {}
        for model, price in (data.get("prices") or {}).items():
            if not isinstance(price, Mapping) or set(price) - {"prompt", "completion"}:
                raise ValueError(
                    f"{where}.prices.{model}: expected {{prompt, completion}} in USD per million tokens"
                )
            prices[str(model)] = {k: float(v) for k, v in price.items()}
        return cls(
            base_url=str(base_url).rstrip("/"),
            api_key=data.get("api_key") or None,
            api_key_secret=str(data.get("api_key_secret", "openai_api_key")),
            api_key_env=data.get("api_key_env", "OPENAI_API_KEY"),
            models={str(k): str(v) for k, v in (data.get("models") or {}).items()},
            only_listed_models=bool(data.get("only_listed_models", False)),
            temperature=float(data["temperature"]) if data.get("temperature") is not None else None,
            max_tokens=int(data.get("max_tokens") or 0),
            max_turns=int(data.get("max_turns") or 8),
            stream=bool(data.get("stream", True)),
            timeout=parse_seconds(data.get("timeout", 60)),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            prices=prices,
        )


@dataclass(slots=True)
class _Turn:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


class OpenAIProvider(AgentProvider):
    def __init__(
        self,
        config: OpenAIConfig | None = None,
        *,
        name: str = "openai",
        tools: ToolRegistry | Callable[[], ToolRegistry | None] | None = None,
        secrets: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.config = config or OpenAIConfig()
        self._tools = tools
        self._secrets = dict(secrets or {})
        self._env = os.environ if env is None else env
        self._transport = transport

    def knows_model(self, model: str) -> bool:
        if self.config.only_listed_models:
            return model in self.config.models
        return bool(model)

    def _registry(self) -> ToolRegistry | None:
        tools = self._tools
        return tools() if callable(tools) and not isinstance(tools, ToolRegistry) else tools

    def _api_key(self, ctx: CallContext) -> str | None:
        c = self.config
        return (
            c.api_key
            or ctx.secrets.get(c.api_key_secret)
            or self._secrets.get(c.api_key_secret)
            or (self._env.get(c.api_key_env) if c.api_key_env else None)
        )

    # ------------------------------------------------------------------ the call
    async def complete(self, request: AgentRequest, ctx: CallContext) -> Any:
        import httpx  # on first use: a server that calls no model never loads it

        c = self.config
        model = c.models.get(request.model, request.model)
        tools = AgentTools(self._registry(), request.tools, ctx) if request.tools else None
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        max_turns = request.max_turns or c.max_turns
        headers = {"Content-Type": "application/json", **c.headers}
        key = self._api_key(ctx)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif c.base_url == DEFAULT_BASE_URL:
            raise ToolFailure(
                "agent_error",
                f"no API key for {c.base_url}: set the secret {c.api_key_secret!r}"
                + (f" or ${c.api_key_env}" if c.api_key_env else ""),
            )
        async with httpx.AsyncClient(
            base_url=c.base_url,
            headers=headers,
            timeout=httpx.Timeout(c.timeout),
            transport=self._transport,
            trust_env=True,
        ) as client:
            for turn in range(1, max_turns + 1):
                body: dict[str, Any] = {"model": model, "messages": messages}
                temperature = (
                    request.temperature if request.temperature is not None else c.temperature
                )
                if temperature is not None:
                    body["temperature"] = temperature
                max_tokens = request.max_tokens or c.max_tokens
                if max_tokens:
                    body["max_tokens"] = max_tokens
                if tools:
                    body["tools"] = tools.openai_specs()
                    if turn == max_turns:
                        body["tool_choice"] = "none"
                if request.output_schema is not None:
                    body["response_format"] = {
                        "type": "json_schema",
                        "json_schema": {
                            "name": "output",
                            "schema": dict(request.output_schema),
                            "strict": False,
                        },
                    }
                try:
                    result = await self._post(
                        client,
                        body,
                        ctx,
                        turn,
                        c.stream if request.stream is None else request.stream,
                    )
                except ToolFailure as exc:
                    if (
                        key and len(key) >= 4 and key in exc.message
                    ):  # an endpoint quoting the key back
                        exc.message = exc.message.replace(key, "[REDACTED]")
                    raise
                self._usage(model, result.usage, ctx)
                if not result.tool_calls:
                    return self._answer(result.content, request)
                if not tools:
                    raise ToolFailure(
                        "agent_error", "the model called a tool, but the node offers none"
                    )
                messages.append(
                    {
                        "role": "assistant",
                        "content": result.content or None,
                        "tool_calls": [
                            {
                                "id": tc["id"],
                                "type": "function",
                                "function": {"name": tc["name"], "arguments": tc["arguments"]},
                            }
                            for tc in result.tool_calls
                        ],
                    }
                )
                for index, tc in enumerate(result.tool_calls):
                    ok, value = await tools.call(
                        tc["name"], tc["arguments"], turn=turn, index=index, call_id=tc["id"]
                    )
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": tc["id"],
                            "content": result_text(ok, value),
                        }
                    )
        raise ToolFailure(
            "agent_error", f"the model still called tools after max_turns={max_turns}"
        )

    def _answer(self, content: str, request: AgentRequest) -> Any:
        if request.output_schema is None:
            return {"text": content}
        try:
            value = json.loads(content)
        except ValueError:
            raise ToolFailure(
                "invalid_output", "the answer is not JSON", details={"answer": content[:2000]}
            ) from None
        try:
            jsonschema.validate(value, request.output_schema)
        except jsonschema.ValidationError as exc:
            raise ToolFailure(
                "invalid_output",
                f"answer does not match output_schema: {exc.message}",
                details={"answer": value},
            ) from None
        return value

    def _usage(self, model: str, usage: Mapping[str, Any] | None, ctx: CallContext) -> None:
        if not usage:
            return
        pt = int(usage.get("prompt_tokens") or 0)
        ct = int(usage.get("completion_tokens") or 0)
        data: dict[str, Any] = {
            "prompt_tokens": pt,
            "completion_tokens": ct,
            "total_tokens": int(usage.get("total_tokens") or pt + ct),
            "model": model,
        }
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
        if isinstance(cached, int) and not isinstance(cached, bool) and cached > 0:
            data["cached_tokens"] = cached  # part of prompt_tokens, read from the provider's cache
        price = self.config.prices.get(model)
        if price is not None:
            data["cost"] = round(
                pt * price.get("prompt", 0.0) / 1e6 + ct * price.get("completion", 0.0) / 1e6, 10
            )
        emit(ctx, "agent.usage", data)

    # ------------------------------------------------------------------ HTTP
    async def _post(
        self,
        client: httpx.AsyncClient,
        body: dict[str, Any],
        ctx: CallContext,
        turn: int,
        stream: bool,
    ) -> _Turn:
        import httpx

        if stream:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    text = (await response.aread())[:4000].decode("utf-8", "replace")
                    raise _status_failure(response, text)
                ctype = response.headers.get("content-type", "")
                if stream and "text/event-stream" in ctype:
                    return await self._read_stream(response, ctx, turn)
                raw = await response.aread()
        except httpx.TimeoutException:
            raise ToolFailure(
                "timeout", f"the model did not answer within {self.config.timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ToolFailure(
                "agent_error", f"cannot reach the model endpoint: {type(exc).__name__}: {exc}"
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise ToolFailure(
                "agent_error", "the model endpoint answered with malformed JSON"
            ) from None
        return _parse_message(data)

    async def _read_stream(self, response: httpx.Response, ctx: CallContext, turn: int) -> _Turn:
        out = _Turn()
        calls: dict[int, dict[str, Any]] = {}
        done = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                raise ToolFailure(
                    "agent_error", "the model endpoint streamed malformed JSON"
                ) from None
            if not isinstance(chunk, dict):
                raise ToolFailure("agent_error", "the model endpoint streamed an unexpected chunk")
            if chunk.get("error"):
                raise ToolFailure(
                    "agent_error", f"the model endpoint failed mid-stream: {_error_text(chunk)}"
                )
            if chunk.get("usage"):
                out.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if text:
                    out.content += text
                    emit(ctx, "agent.delta", {"turn": turn, "text": text})  # the engine coalesces
                for tc in delta.get("tool_calls") or []:
                    slot = calls.setdefault(
                        int(tc.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                    )
                    slot["id"] = tc.get("id") or slot["id"]
                    fn = tc.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
                if choice.get("finish_reason"):
                    out.finish_reason = choice["finish_reason"]
        if not done and out.finish_reason is None:
            raise ToolFailure("agent_error", "the model endpoint ended the stream early")
        out.tool_calls = [
            {**calls[i], "id": calls[i]["id"] or f"call_{turn}_{i}"} for i in sorted(calls)
        ]
        return out


def _parse_message(data: Any) -> _Turn:
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise ToolFailure(
            "agent_error", "the model endpoint's answer has no choices[0].message"
        ) from None
    out = _Turn(
        content=message.get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=data.get("usage"),
    )
    for i, tc in enumerate(message.get("tool_calls") or []):
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        out.tool_calls.append(
            {
                "id": tc.get("id") or f"call_{i}",
                "name": fn.get("name") or "",
                "arguments": args if isinstance(args, str) else json.dumps(args or {}),
            }
        )
    return out


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)[:500]
        if err:
            return str(err)[:500]
    return ""


def _status_failure(response: httpx.Response, text: str) -> ToolFailure:
    status = response.status_code
    try:
        detail = _error_text(json.loads(text))
    except ValueError:
        detail = ""
    message = f"model endpoint answered HTTP {status}" + (f": {detail}" if detail else "")
    details = {"status": status}
    if status == 429:
        return ToolFailure(
            "rate_limited",
            message,
            details=details,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    if status == 408:
        return ToolFailure("timeout", message, details=details)
    return ToolFailure("agent_error", message, details=details)
