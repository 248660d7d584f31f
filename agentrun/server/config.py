"""Server configuration from defaults, an optional YAML file, `AGENTRUN_*` environment
variables and flags, each overriding the one before.

```yaml
listen: 0.0.0.0:50051
http_listen: 127.0.0.1:8080     # Connect/gRPC-Web API and the web console (unset: off)
database_url: postgresql://postgres@127.0.0.1:5432/agentrun
api_keys:                       # auth is on when any key is configured
  - {key: s3cret, tenant: acme, rate: 100, burst: 200}
rate_limit: 1000                # default requests/s per key (0: unlimited)
rate_burst: 2000
max_message_bytes: 4194304      # largest request
max_send_message_bytes: 67108864  # largest response
max_concurrent_streams: 256
max_concurrent_rpcs: 10000
keepalive_time: 60              # seconds between server pings on idle connections
keepalive_timeout: 20
min_ping_interval: 10           # clients pinging more often are disconnected
shutdown_grace: 10
access_log: false               # one log line per call
log_level: INFO                 # DEBUG, INFO, WARNING, ERROR
log_format: auto                # json, text, or auto (text on a terminal, JSON otherwise)
tracing: none                   # OpenTelemetry exporter: none, console, otlp
otlp_endpoint: http://collector:4317  # default $OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317
trace_sample_ratio: 1.0         # share of new traces sampled (a caller's sampled flag wins)
metrics_port: 9464              # Prometheus /metrics (unset: no metrics)
limits: {max_running_nodes: 100, max_running_per_target: {http.request: 5}, rate_limits: {openai: {rate: 10, per: 1s}}}  # the engine's (fleet-wide on PostgreSQL)
data_limits: {expression_cost: 100000}  # docs/runtime.md, "Limits on expressions and data"
budgets: {tenants: {acme: {max_tokens: 1000000, max_cost: 20, window: day}}}  # docs/runtime.md, "Budgets"
prices: {openai: {gpt-4o-mini: {input: 0.15, output: 0.60}}}  # per million tokens
circuit_breakers: {http.get: {failure_threshold: 5, window: 1m}}
mock: {responses: {}}           # anything else is for the integrations (tools, agents)
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentrun.engine.limits import DataLimits
from agentrun.engine.limits import from_mapping as data_limits_from_mapping
from agentrun.engine.runtime.common import DEFAULT_TENANT

if TYPE_CHECKING:
    from agentrun.engine.config import EngineConfig
from agentrun.server.auth import ApiKey, parse_env_keys

DEFAULT_LISTEN = "127.0.0.1:50051"


class ConfigError(ValueError):
    """The configuration file or an AGENTRUN_* variable is invalid."""


@dataclass(slots=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    # The HTTP port (Connect, gRPC-Web, web console); None: off.
    http_listen: str | None = None
    # None: $AGENTRUN_DATABASE_URL or the embedded SQLite file in ./.agentrun/.
    database_url: str | None = None
    api_keys: list[ApiKey] = field(default_factory=list)
    # None: on when any key is configured.
    auth: bool | None = None
    rate_limit: float = 1000.0
    rate_burst: float | None = None
    # Largest request accepted (larger ones fail RESOURCE_EXHAUSTED before any handler).
    max_message_bytes: int = 4 * 1024 * 1024
    # Largest response sent: outputs can outgrow requests (a map's output, a node list).
    max_send_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_streams: int = 256
    max_concurrent_rpcs: int | None = 10_000
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    min_ping_interval: float = 10.0
    shutdown_grace: float = 10.0
    reflection: bool = True
    # One log line per call (agentrun.server.access logger).
    access_log: bool = False
    # Logs (agentrun.server.observability.logging): level and json | text | auto.
    log_level: str = "INFO"
    log_format: str = "auto"
    # Traces: exporter none | console | otlp, its endpoint, and the sampling ratio.
    tracing: str = "none"
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = 1.0
    service_name: str = "agentrun"
    # Prometheus metrics on http://HOST:PORT/metrics; None: no metrics.
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    # Expression cost and data sizes (`data_limits:`, agentrun.engine.limits; docs/runtime.md).
    data_limits: DataLimits = field(default_factory=DataLimits)
    # The whole config file: tool and agent settings (`mock: {responses: ...}`) are read by
    # agentrun.integrations, as `agentrun run --config` reads the same file.
    integrations: dict[str, Any] = field(default_factory=dict)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys) if self.auth is None else self.auth

    def grpc_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_ping_interval * 1000)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.so_reuseport", 0),
        ]

    def engine_config(self) -> EngineConfig:
        """EngineConfig from the file's engine sections (`limits:`, `budgets:`, `prices:`,
        `circuit_breakers:`, `replica_id:`, `lease:`), as `agentrun run --config` reads them, with secrets from
        the secret store; $AGENTRUN_REPLICA_ID names this replica when the file does not."""
        from agentrun.engine import EngineConfig
        from agentrun.integrations import load_secrets

        data = dict(self.integrations)
        if not data.get("replica_id") and os.environ.get("AGENTRUN_REPLICA_ID"):
            data["replica_id"] = os.environ["AGENTRUN_REPLICA_ID"]
        try:
            return EngineConfig.from_mapping(data, secrets=load_secrets(self.integrations))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServerConfig:
        """Defaults < YAML file (`path` or $AGENTRUN_CONFIG) < environment < `overrides`
        (flags; None values are ignored)."""
        env = os.environ if env is None else env
        config = cls()
        path = path or env.get("AGENTRUN_CONFIG") or None
        if path:
            config = _apply_file(config, Path(path))
        config = _apply_env(config, env)
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return _check_observability(replace(config, **given))


_NUMBERS = {
    "rate_limit": float,
    "rate_burst": float,
    "max_message_bytes": int,
    "max_send_message_bytes": int,
    "max_concurrent_streams": int,
    "max_concurrent_rpcs": int,
    "keepalive_time": float,
    "keepalive_timeout": float,
    "min_ping_interval": float,
    "shutdown_grace": float,
    "trace_sample_ratio": float,
    "metrics_port": int,
}
# Observability settings read from AGENTRUN_<NAME> as strings.
_STRINGS = ("log_level", "log_format", "tracing", "otlp_endpoint", "service_name", "metrics_host")


def _apply_file(config: ServerConfig, path: Path) -> ServerConfig:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    known = {f.name for f in fields(ServerConfig)} - {"integrations"}
    values: dict[str, Any] = {"integrations": data}
    for key, value in data.items():
        if key not in known:
            continue
        if key == "api_keys":
            values[key] = _keys_from_file(path, value)
        elif key == "data_limits":
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{path}: data_limits: expected a mapping")
            try:
                values[key] = data_limits_from_mapping(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        elif key in _NUMBERS and value is not None:
            try:
                values[key] = _NUMBERS[key](value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}: not a number: {value!r}") from None
        else:
            values[key] = value
    return replace(config, **values)


def _keys_from_file(path: Path, value: Any) -> list[ApiKey]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: api_keys: expected a list")
    keys = []
    for n, item in enumerate(value):
        if not isinstance(item, dict) or not item.get("key"):
            raise ConfigError(f"{path}: api_keys[{n}]: expected {{key, tenant}}")
        keys.append(
            ApiKey(
                key=str(item["key"]),
                tenant=str(item.get("tenant") or DEFAULT_TENANT),
                rate=float(item["rate"]) if item.get("rate") is not None else None,
                burst=float(item["burst"]) if item.get("burst") is not None else None,
                name=str(item.get("name") or f"{path.name}#{n}"),
            )
        )
    return keys


def _apply_env(config: ServerConfig, env: Mapping[str, str]) -> ServerConfig:
    values: dict[str, Any] = {}
    if env.get("AGENTRUN_LISTEN"):
        values["listen"] = env["AGENTRUN_LISTEN"]
    if env.get("AGENTRUN_HTTP_LISTEN"):
        values["http_listen"] = env["AGENTRUN_HTTP_LISTEN"]
    if env.get("AGENTRUN_DATABASE_URL"):
        values["database_url"] = env["AGENTRUN_DATABASE_URL"]
    if env.get("AGENTRUN_API_KEYS"):
        values["api_keys"] = [*config.api_keys, *parse_env_keys(env["AGENTRUN_API_KEYS"])]
    if env.get("AGENTRUN_ACCESS_LOG"):
        values["access_log"] = env["AGENTRUN_ACCESS_LOG"].lower() in ("1", "true", "on", "yes")
    if env.get("AGENTRUN_AUTH"):
        values["auth"] = env["AGENTRUN_AUTH"].lower() in ("1", "true", "on", "yes")
    for key in _STRINGS:
        if env.get("AGENTRUN_" + key.upper()):
            values[key] = env["AGENTRUN_" + key.upper()]
    for key, kind in _NUMBERS.items():
        name = "AGENTRUN_" + key.upper()
        if env.get(name):
            try:
                values[key] = kind(env[name])
            except ValueError:
                raise ConfigError(f"{name}: not a number: {env[name]!r}") from None
    return replace(config, **values)


def _check_observability(config: ServerConfig) -> ServerConfig:
    import logging

    if config.tracing not in ("none", "console", "otlp"):
        raise ConfigError(f"tracing: {config.tracing!r} is not one of none, console, otlp")
    if not 0.0 <= config.trace_sample_ratio <= 1.0:
        raise ConfigError(f"trace_sample_ratio: {config.trace_sample_ratio} is not between 0 and 1")
    if config.log_format not in ("auto", "json", "text"):
        raise ConfigError(f"log_format: {config.log_format!r} is not one of auto, json, text")
    if not isinstance(logging.getLevelName(str(config.log_level).upper()), int):
        raise ConfigError(
            f"log_level: {config.log_level!r} is not a level (DEBUG, INFO, WARNING, ERROR)"
        )
    if config.metrics_port is not None and not 0 <= config.metrics_port <= 65535:
        raise ConfigError(f"metrics_port: {config.metrics_port} is not a port")
    return config
