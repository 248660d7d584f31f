"""Helpers for the CLI tests: run `agentrun` in this process and capture what it prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentrun.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`cli("run", "f.yaml", ...)` runs `agentrun` in-process, in a scratch directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTRUN_DATABASE_URL", raising=False)
    monkeypatch.delenv("AGENTRUN_DEBUG", raising=False)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def write(tmp_path: Path):
    """`write("name.yaml", text)` writes a file in the scratch directory; returns its path."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return _write
