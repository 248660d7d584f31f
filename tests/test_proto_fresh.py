"""The checked-in generated code matches the .proto files, and the protos pass buf lint."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    protos = sorted(str(p.relative_to(ROOT)) for p in (PROTO / "agentrun" / "v1").glob("*.proto"))
    (tmp_path / "agentrun" / "v1").mkdir(parents=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            # What reflection serves: the same files with their comments (`make proto`).
            "--include_source_info",
            f"--descriptor_set_out={tmp_path / 'agentrun' / 'v1' / 'descriptor_set.binpb'}",
            *protos,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "agentrun" / "v1").iterdir())
    assert generated, "protoc generated nothing"
    stale = [
        str(rel)
        for rel in generated
        if not (ROOT / rel).exists() or not filecmp.cmp(tmp_path / rel, ROOT / rel, shallow=False)
    ]
    assert not stale, f"regenerate with `make proto`: {stale}"
    checked_in = {p.relative_to(ROOT) for p in (ROOT / "agentrun" / "v1").glob("*_pb2*")}
    orphans = sorted(str(p) for p in checked_in - set(generated))
    assert not orphans, f"generated files without a .proto: {orphans}"


def test_buf_lint() -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed")
    result = subprocess.run(
        [npx, "--yes", "@bufbuild/buf@1.75.0", "lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0 and "ENOTFOUND" in result.stderr + result.stdout:
        pytest.skip("the npm registry is not reachable")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_previous_commit() -> None:
    """FILE-level breaking-change check of the protos against the previous commit's."""
    npx, git = shutil.which("npx"), shutil.which("git")
    if npx is None or git is None:
        pytest.skip("npx or git is not installed")
    previous = subprocess.run(
        [git, "rev-parse", "--verify", "--quiet", "HEAD~1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if previous.returncode != 0:
        pytest.skip("no previous commit (a shallow clone?)")
    has_protos = subprocess.run(
        [git, "ls-tree", "-r", "--name-only", "HEAD~1", "proto/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if not has_protos.stdout.strip():
        pytest.skip("the previous commit has no protos")
    result = subprocess.run(
        [npx, "--yes", "@bufbuild/buf@1.75.0", "breaking", "--against", ".git#ref=HEAD~1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 and "ENOTFOUND" in result.stderr + result.stdout:
        pytest.skip("the npm registry is not reachable")
    assert result.returncode == 0, result.stdout + result.stderr
