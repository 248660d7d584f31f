"""JSON log lines: one object per line with time, level, logger, message and the execution
context (tenant, workflow, execution, node, trace id); secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agentrun.server.observability import configure_logging
from agentrun.server.observability.tracing import trace_id_of

from .conftest import SECRET, Stack

SECRETIVE = """
name: secretive
nodes:
  - {id: leak, tool: {name: test.secretive, args: {}}}
"""


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", "json", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_json_logs_carry_the_execution_context(stack: Stack, log_stream: io.StringIO) -> None:
    execution = await stack.run()
    records = lines(log_stream)
    assert records, "nothing logged"
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("+00:00")
    [answer] = [r for r in records if r["logger"] == "test.provider"]
    assert answer["message"] == "answering hello"
    assert answer["level"] == "INFO"
    assert answer["tenant"] == "default"
    assert answer["workflow"] == "traced"
    assert answer["execution"] == execution.id
    assert answer["node"] == "ask"
    assert answer["attempt"] == 1
    assert answer["trace_id"] == trace_id_of(execution.labels["traceparent"])
    assert len(answer["span_id"]) == 16


async def test_secrets_never_reach_the_log(stack: Stack, log_stream: io.StringIO) -> None:
    await stack.run(SECRETIVE)
    logging.getLogger("test").warning("header was Authorization: Bearer abc.def-123")
    text = log_stream.getvalue()
    assert SECRET not in text
    assert "abc.def-123" not in text
    [tool] = [r for r in lines(log_stream) if r["logger"] == "test.tool"]
    assert tool["message"] == "calling with [REDACTED]"
    assert tool["level"] == "WARNING" and tool["node"] == "leak"


def test_levels_by_config_and_text_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        stream = Tty()
        configure_logging("warning", "auto", stream)
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("shown %d", 1)
        text = stream.getvalue()
        assert "hidden" not in text
        assert "WARNING x: shown 1" in text
        with pytest.raises(ValueError):
            json.loads(text.splitlines()[0])
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_config_validates_observability_settings() -> None:
    from agentrun.server import ConfigError, ServerConfig

    config = ServerConfig.load(
        env={
            "AGENTRUN_METRICS_PORT": "9464",
            "AGENTRUN_LOG_LEVEL": "debug",
            "AGENTRUN_LOG_FORMAT": "json",
            "AGENTRUN_TRACING": "otlp",
        }
    )
    assert (config.metrics_port, config.log_level, config.log_format, config.tracing) == (
        9464,
        "debug",
        "json",
        "otlp",
    )
    for bad in (
        {"AGENTRUN_TRACING": "jaeger"},
        {"AGENTRUN_TRACE_SAMPLE_RATIO": "2"},
        {"AGENTRUN_LOG_FORMAT": "xml"},
        {"AGENTRUN_LOG_LEVEL": "LOUD"},
    ):
        with pytest.raises(ConfigError):
            ServerConfig.load(env=bad)
