"""Server configuration: file < environment < flags; API keys from both."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrun.server import ConfigError, ServerConfig


def test_defaults_are_local_and_open() -> None:
    config = ServerConfig.load(env={})
    assert config.listen == "127.0.0.1:50051"
    assert not config.auth_enabled
    options = dict(config.grpc_options())
    assert options["grpc.max_receive_message_length"] == 4 * 1024 * 1024
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000


def test_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(
        "listen: 0.0.0.0:6000\n"
        "api_keys:\n  - {key: k1, tenant: acme, rate: 5}\n"
        "max_message_bytes: 1024\n"
        "mock: {responses: {triage: [{text: hi}]}}\n"
    )
    env = {"AGENTRUN_API_KEYS": "k2:globex,k3", "AGENTRUN_MAX_MESSAGE_BYTES": "2048"}
    config = ServerConfig.load(path, env=env, listen="127.0.0.1:7000", database_url=None)
    assert config.listen == "127.0.0.1:7000"
    assert config.max_message_bytes == 2048
    assert [(k.key, k.tenant, k.rate) for k in config.api_keys] == [
        ("k1", "acme", 5.0),
        ("k2", "globex", None),
        ("k3", "default", None),
    ]
    assert config.auth_enabled
    assert config.integrations["mock"] == {"responses": {"triage": [{"text": "hi"}]}}


@pytest.mark.parametrize(
    "text",
    ["- a list\n", "api_keys: {k: v}\n", "api_keys: [{tenant: t}]\n", "rate_limit: fast\n"],
)
def test_bad_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        ServerConfig.load(path, env={})


def test_engine_sections(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(
        "limits: {rate_limits: {openai: {rate: 10, per: 1s}}}\n"
        "circuit_breakers: {core.fail: {failure_threshold: 2, window: 1m}}\n"
    )
    engine_config = ServerConfig.load(path, env={}).engine_config()
    assert engine_config.circuit_breakers["core.fail"].window == 60.0
    assert engine_config.scheduler is not None
    path.write_text("circuit_breakers: {x: {colour: red}}\n")
    with pytest.raises(ConfigError):
        ServerConfig.load(path, env={}).engine_config()
