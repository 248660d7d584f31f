"""`http.request`: one HTTP call, behind the SSRF guard, with timeouts and a size limit.

Config (`tools: {http.request: {...}}`):
  allow: [hosts, addresses, networks]   # opened past the SSRF guard (see ssrf.py)
  timeout: 10                            # default seconds per call; args.timeout may lower it
  max_timeout: 60                        # args.timeout is capped here
  max_response_bytes: 1048576            # a larger body fails the call
  max_redirects: 5
  user_agent: agentrun
  ca_bundle: /etc/ssl/internal-ca.pem    # trust these CAs (PEM) instead of the system's
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations.tools.ssrf import Blocked, Guard
from agentrun.integrations.util import parse_seconds, retry_after_seconds

if TYPE_CHECKING:
    import httpx

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REDIRECTS = {301, 302, 303, 307, 308}
_DROP_ON_NEW_ORIGIN = {"authorization", "cookie", "proxy-authorization"}


class HttpRequest(Tool):
    name = "http.request"
    description = (
        "Makes an HTTP request to a public http(s) URL and returns {status, headers, body};"
        " the body is parsed when it is JSON."
    )
    args_schema = {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "method": {"type": "string", "enum": METHODS + [m.lower() for m in METHODS]},
            "url": {"type": "string", "minLength": 1},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "params": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "json": {},
            "body": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "fail_on_status": {"type": "boolean"},
        },
    }
    result_schema = {
        "type": "object",
        "required": ["status", "headers", "body"],
        "properties": {"status": {"type": "integer"}, "headers": {"type": "object"}, "body": {}},
    }
    effect = Effect.IDEMPOTENT

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - {
            "allow",
            "timeout",
            "max_timeout",
            "max_response_bytes",
            "max_redirects",
            "user_agent",
            "ca_bundle",
        }
        if unknown:
            raise ValueError(f"tools.http.request: unknown keys {', '.join(sorted(unknown))}")
        self.guard = Guard(config.get("allow") or [])
        self.timeout = parse_seconds(config.get("timeout", 10))
        self.max_timeout = parse_seconds(config.get("max_timeout", 60))
        self.max_bytes = int(config.get("max_response_bytes", 1024 * 1024))
        self.max_redirects = int(config.get("max_redirects", 5))
        self.user_agent = str(config.get("user_agent", "agentrun"))
        self.verify: ssl.SSLContext | bool = True
        if config.get("ca_bundle"):
            self.verify = ssl.create_default_context(cafile=str(config["ca_bundle"]))

    async def call(self, args: Any, ctx: CallContext) -> Any:
        import httpx  # on first use: a server that makes no HTTP call never loads it

        method = str(args.get("method") or "GET").upper()
        try:
            url = httpx.URL(args["url"])
            if args.get("params"):
                url = url.copy_merge_params({k: _param(v) for k, v in args["params"].items()})
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise ToolFailure(
                "invalid_args", f"args.url: not a valid URL: {exc}", details={"field": "args.url"}
            ) from None
        timeout = min(float(args.get("timeout") or self.timeout), self.max_timeout)
        headers = {
            str(k): str(v)
            for k, v in (args.get("headers") or {}).items()
            if str(k).lower() != "host"
        }
        for k, v in headers.items():
            if not _TOKEN.match(k) or any(c in v for c in "\r\n\x00"):
                raise ToolFailure(
                    "invalid_args",
                    f"args.headers.{k}: line breaks are not allowed in headers",
                    details={"field": f"args.headers.{k}"},
                )
        headers.setdefault("User-Agent", self.user_agent)
        if method not in ("GET", "HEAD", "OPTIONS") and not any(
            k.lower() == "idempotency-key" for k in headers
        ):
            headers["Idempotency-Key"] = ctx.idempotency_key
        content: bytes | None = None
        if "json" in args:
            content = json.dumps(args["json"]).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif args.get("body") is not None:
            content = str(args["body"]).encode()
        try:
            async with httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout),
                verify=self.verify,
            ) as client:
                return await self._send(client, method, url, headers, content, args)
        except Blocked as exc:
            raise ToolFailure(
                "http.blocked", f"request blocked: {exc}", details={"url": str(url)}
            ) from None
        except httpx.TimeoutException:
            raise ToolFailure("timeout", f"HTTP request timed out after {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ToolFailure(
                "tool_error", f"HTTP request failed: {type(exc).__name__}: {exc}"
            ) from None

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        args: Mapping[str, Any],
    ) -> Any:
        import httpx

        for _ in range(self.max_redirects + 1):
            target = await self.guard.check(url.scheme, url.host, url.port)
            pinned = url.copy_with(host=target.address)
            request = client.build_request(
                method,
                pinned,
                headers={**headers, "Host": _host_header(url)},
                content=content,
                extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
            )
            response = await client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    try:
                        nxt = url.join(response.headers["location"])
                    except httpx.InvalidURL as exc:
                        raise Blocked(f"bad redirect location: {exc}") from None
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"
                    ):
                        method, content = ("GET" if method != "HEAD" else "HEAD"), None
                        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                    if (nxt.scheme, nxt.host, nxt.port) != (url.scheme, url.host, url.port):
                        headers = {
                            k: v for k, v in headers.items() if k.lower() not in _DROP_ON_NEW_ORIGIN
                        }
                    url = nxt
                    continue
                body = await self._read(response)
            finally:
                await response.aclose()
            return self._result(response, body, args)
        raise ToolFailure("tool_error", f"more than {self.max_redirects} redirects")

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise ToolFailure(
                "tool_error",
                f"response body of {declared} bytes exceeds the limit of {self.max_bytes}",
                details={"reason": "response_too_large"},
            )
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise ToolFailure(
                    "tool_error",
                    f"response body exceeds the limit of {self.max_bytes} bytes",
                    details={"reason": "response_too_large"},
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _result(self, response: httpx.Response, raw: bytes, args: Mapping[str, Any]) -> Any:
        ctype = response.headers.get("content-type", "")
        body: Any = raw.decode(response.encoding or "utf-8", "replace")
        if "json" in ctype and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        status = response.status_code
        if status >= 400 and args.get("fail_on_status", True):
            details = {"status": status, "body": body if not isinstance(body, str) else body[:2000]}
            if status == 429:
                raise ToolFailure(
                    "rate_limited",
                    f"HTTP {status}",
                    details=details,
                    retry_after=retry_after_seconds(response.headers.get("retry-after")),
                )
            raise ToolFailure("tool_error", f"HTTP {status}", details=details)
        headers: dict[str, str] = {}
        for key, value in response.headers.multi_items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return {"status": status, "headers": headers, "body": body}


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    default = 443 if url.scheme == "https" else 80
    return host if url.port in (None, default) else f"{host}:{url.port}"


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
