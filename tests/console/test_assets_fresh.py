"""The console's checked-in build and generated clients match its sources.

`make serve` serves agentrun/server/console/static/ without Node.js, so a change to
console/src or to the .proto files must come with `make console`; these tests rebuild into a
temporary directory and compare byte for byte (the build is deterministic: no hashes, dates
or absolute paths in its output).
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from tests.console.conftest import CONSOLE, STATIC, npm_exec

pytestmark = pytest.mark.timeout(600)


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _differences(built: Path, checked_in: Path) -> list[str]:
    new, old = _tree(built), _tree(checked_in)
    out = [f"missing: {name}" for name in sorted(new.keys() - old.keys())]
    out += [f"not built any more: {name}" for name in sorted(old.keys() - new.keys())]
    out += [
        f"differs: {name}"
        for name in sorted(new.keys() & old.keys())
        if not filecmp.cmp(new[name], old[name], shallow=False)
    ]
    return out


def test_built_assets_are_fresh(npm: str, tmp_path: Path) -> None:
    out = tmp_path / "static"
    npm_exec(
        npm, "vite", "build", "--logLevel", "error", env={**os.environ, "CONSOLE_OUT_DIR": str(out)}
    )
    stale = _differences(out, STATIC)
    assert not stale, f"the console's assets are stale, run `make console`: {stale}"


def test_generated_clients_are_fresh(npm: str, tmp_path: Path) -> None:
    template = (CONSOLE / "buf.gen.yaml").read_text().replace("out: src/gen", f"out: {tmp_path}")
    (tmp_path / "buf.gen.yaml").write_text(template)
    npm_exec(
        npm, "buf", "generate", "..", "--template", str(tmp_path / "buf.gen.yaml"), timeout=300
    )
    (tmp_path / "buf.gen.yaml").unlink()
    stale = _differences(tmp_path, CONSOLE / "src" / "gen")
    assert not stale, f"console/src/gen is stale, run `make console`: {stale}"
