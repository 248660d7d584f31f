"""The docs name what the code has: every proto file in docs/grpc-api.md's table, every service
in `agentrun serve --help`, every command in docs/cli.md's list."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

from agentrun.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PROTOS = sorted((ROOT / "proto" / "agentrun" / "v1").glob("*.proto"))


def _services() -> list[str]:
    return [
        name
        for path in PROTOS
        for name in re.findall(r"^service (\w+)", path.read_text(), re.MULTILINE)
    ]


def test_grpc_api_table_lists_every_proto_file() -> None:
    text = (ROOT / "docs" / "grpc-api.md").read_text()
    table = {m for m in re.findall(r"^\| `(\w+\.proto)` \|", text, re.MULTILINE)}
    assert table == {p.name for p in PROTOS}


def test_serve_help_names_every_service() -> None:
    assert len(_services()) >= 3
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["serve", "--help"]) == 0
    text = " ".join(out.getvalue().split())
    assert [s for s in _services() if s not in text] == []


def test_cli_docs_list_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = (ROOT / "docs" / "cli.md").read_text()
    overview = text[: text.index("## Exit codes")]
    named = set(re.findall(r"`([a-z]+)`", overview))
    assert sorted(set(sub.choices) - named) == []
    # Each has its row or section too.
    assert [c for c in sub.choices if f"`agentrun {c}" not in text] == []
