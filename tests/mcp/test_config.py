"""`mcp_servers:` refused with the key and the problem; the missing SDK said plainly."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agentrun.integrations import default_tools
from agentrun.integrations.mcp.config import parse_servers

from .conftest import stdio_server


@pytest.mark.parametrize(
    "section, message",
    [
        ([], "mcp_servers: expected a mapping of server names"),
        ({"1x": {"command": "x"}}, "mcp_servers.1x: a server name is a letter"),
        ({"a": "x"}, "mcp_servers.a: expected a mapping with `command` or `url`"),
        ({"a": {}}, "mcp_servers.a: give exactly one of `command` (stdio) or `url`"),
        ({"a": {"command": "x", "url": "http://h/mcp"}}, "mcp_servers.a: give exactly one of"),
        ({"a": {"command": "x", "typo": 1}}, "mcp_servers.a: unknown keys typo"),
        ({"a": {"command": ""}}, "mcp_servers.a.command: expected a non-empty string"),
        ({"a": {"command": "x", "args": "y"}}, "mcp_servers.a.args: expected a list of strings"),
        ({"a": {"command": "x", "headers": {}}}, "mcp_servers.a.headers: only for a `url` server"),
        ({"a": {"url": "ftp://h"}}, "mcp_servers.a.url: expected an http:// or https:// URL"),
        (
            {"a": {"url": "http://h/mcp", "env": {}}},
            "mcp_servers.a.env: only for a `command` server",
        ),
        (
            {"a": {"url": "http://h/mcp", "headers": {"X": {"secret": "nope"}}}},
            "mcp_servers.a.headers.X: secret 'nope' is not in the secret store",
        ),
        (
            {"a": {"url": "http://h/mcp", "headers": {"X": {"secrt": "k"}}}},
            "mcp_servers.a.headers.X: expected a string or {secret: NAME, prefix: TEXT}",
        ),
        ({"a": {"command": "x", "env": {"K": [1]}}}, "mcp_servers.a.env.K: expected a string or"),
        ({"a": {"command": "x", "connect_timeout": "soon"}}, "mcp_servers.a.connect_timeout:"),
        (
            {"a": {"command": "x", "connect_timeout": 0}},
            "mcp_servers.a.connect_timeout: must be more than 0",
        ),
        (
            {"a": {"command": "x", "include": "add"}},
            "mcp_servers.a.include: expected a list of tool names",
        ),
        (
            {"a": {"command": "x", "effects": {"t": "sometimes"}}},
            "mcp_servers.a.effects.t: 'sometimes' is not one of pure, idempotent, compensable, irreversible",
        ),
    ],
)
def test_bad_config_is_refused_naming_the_key(section: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_servers(section, secrets={})
    assert str(caught.value).startswith(message)


def test_secrets_and_env_fill_headers_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_HOST", "mcp.internal")
    [http, stdio] = parse_servers(
        {
            "h": {
                "url": "https://${MCP_HOST}/mcp",
                "headers": {
                    "Authorization": {"secret": "tok", "prefix": "Bearer "},
                    "X-Plain": "yes",
                },
            },
            "s": {"command": "srv", "args": ["--port", 1], "env": {"KEY": {"secret": "tok"}}},
        },
        secrets={"tok": "s3cret-value"},
    )
    assert http.url == "https://mcp.internal/mcp"
    assert http.headers == {"Authorization": "Bearer s3cret-value", "X-Plain": "yes"}
    assert stdio.args == ("--port", "1") and stdio.env == {"KEY": "s3cret-value"}
    # Names in messages never carry the secret.
    assert "s3cret" not in http.where and "s3cret" not in stdio.where and "s3cret" not in repr(http)


def test_an_included_tool_the_server_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"mcp_servers\.t\.include: the server has no tool nope"):
        default_tools({"mcp_servers": {"t": stdio_server(include=["add", "nope"])}})


def test_a_server_that_does_not_answer_in_time_is_an_error() -> None:
    silent = {
        "command": sys.executable,
        "args": ["-c", "import time; time.sleep(60)"],
        "connect_timeout": "1s",
    }
    with pytest.raises(
        ValueError, match=r"mcp_servers\.quiet: MCP server 'quiet' .* did not answer within 1s"
    ):
        default_tools({"mcp_servers": {"quiet": silent}})


def test_without_the_mcp_package_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # `import mcp` now raises ImportError
    with pytest.raises(ValueError) as caught:
        default_tools({"mcp_servers": {"t": stdio_server()}})
    assert str(caught.value).startswith(
        "mcp_servers needs the `mcp` package, which is not installed"
    )
    assert "pip install 'agentrun[mcp]'" in str(caught.value)


def test_no_mcp_servers_needs_no_mcp_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    assert "core.echo" in default_tools({"mcp_servers": {}}).names()
