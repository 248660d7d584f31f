"""The package builds as `make serve` and `make test` install it: no setuptools deprecation
warnings (a deprecated form stops building on the date setuptools announces), and the license
as an SPDX expression in the metadata."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(240)
def test_build_has_no_deprecation_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    noise = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert noise == [], "\n".join(noise)
    (wheel,) = tmp_path.glob("agentrun-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    assert "License-Expression: Apache-2.0" in metadata


def _make_dry_run(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run on a fresh clone (no venv yet)."""
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_make_serve_installs_without_test_extras(tmp_path: Path) -> None:
    serve = _make_dry_run("serve", tmp_path / "venv")
    assert "pip install -q -e ." in serve and "[dev]" not in serve
    assert "agentrun serve" in serve
    test = _make_dry_run("test", tmp_path / "venv")
    assert "pip install -q -e '.[dev]'" in test
