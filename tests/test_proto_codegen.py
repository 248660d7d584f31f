"""Stubs for other languages come from the .proto files alone: no `M` flags, no extra options.

protoc and the Go plugins are Debian packages that scripts/ensure-test-tools.sh installs
(protobuf-compiler, libprotobuf-dev, protoc-gen-go, protoc-gen-go-grpc); without them these
tests skip. Where Go and the Debian Go sources of google.golang.org/protobuf and grpc are
installed too, the Go stubs are also compiled (offline, GOPATH mode).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "proto" / "agentrun" / "v1").glob("*.proto")
)
GO_IMPORT_PATH = "github.com/agentrun/agentrun/gen/go/agentrun/v1"
DEBIAN_GO_SOURCES = Path("/usr/share/gocode")
# Go's build cache is content-addressed: keeping it makes every run after the first fast.
GO_BUILD_CACHE = Path.home() / ".cache" / "agentrun" / "go-build"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/ensure-test-tools.sh installs it)")
    return path


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=300, **kwargs)  # type: ignore[call-overload,no-any-return]


# Compiling grpc-go from source takes over a minute of a loaded machine (once: the build cache
# is kept between runs).
@pytest.mark.timeout(300)
def test_protoc_generates_go_from_the_files_alone(tmp_path: Path) -> None:
    protoc = _tool("protoc")
    _tool("protoc-gen-go")
    _tool("protoc-gen-go-grpc")
    out = tmp_path / "src"
    out.mkdir()
    result = _run([protoc, "-Iproto", f"--go_out={out}", f"--go-grpc_out={out}", *PROTOS], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    package = out / GO_IMPORT_PATH
    names = {p.name for p in package.iterdir()}
    for proto in PROTOS:
        assert Path(proto).stem + ".pb.go" in names
    for service in ("workflow_service", "execution_service", "state_machine_service"):
        assert f"{service}_grpc.pb.go" in names
    workflow = (package / "workflow.pb.go").read_text()
    assert "package agentrunv1" in workflow
    # Renamed keyword fields: Go names from the proto names, JSON names the file words.
    assert 'protobuf:"bytes,1,opt,name=from_node,json=from,proto3"' in workflow
    assert "PassNode *PassNode" in workflow

    go = shutil.which("go")
    sources = [
        DEBIAN_GO_SOURCES / "src" / m
        for m in ("google.golang.org/protobuf", "google.golang.org/grpc")
    ]
    if go is None or not all(s.is_dir() for s in sources):
        pytest.skip(
            "generated; not compiled: needs go and golang-google-protobuf-dev, golang-google-grpc-dev"
        )
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{tmp_path}{os.pathsep}{DEBIAN_GO_SOURCES}",
        "GOCACHE": str(GO_BUILD_CACHE),
        "GOFLAGS": "",
        "GOPROXY": "off",
    }
    built = _run([go, "build", GO_IMPORT_PATH], cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    vetted = _run([go, "vet", GO_IMPORT_PATH], cwd=tmp_path, env=env)
    assert vetted.returncode == 0, vetted.stderr


def test_protoc_builtin_generators_take_each_language_option(tmp_path: Path) -> None:
    protoc = _tool("protoc")
    outs = {lang: tmp_path / lang for lang in ("java", "csharp", "php", "ruby", "objc")}
    for path in outs.values():
        path.mkdir()
    result = _run(
        [protoc, "-Iproto", *(f"--{lang}_out={path}" for lang, path in outs.items()), *PROTOS],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    java = outs["java"] / "dev" / "agentrun" / "v1"
    assert (java / "Workflow.java").is_file()  # java_multiple_files: one file a message
    assert (java / "WorkflowProto.java").is_file()  # java_outer_classname: no clash with it
    assert "getFromNode()" in (java / "Edge.java").read_text()
    assert "namespace Agentrun.V1" in (outs["csharp"] / "Workflow.cs").read_text()
    assert "namespace Agentrun\\V1;" in (outs["php"] / "Agentrun" / "V1" / "Edge.php").read_text()
    ruby = (outs["ruby"] / "agentrun" / "v1" / "workflow_pb.rb").read_text()
    assert "module Agentrun" in ruby and "module V1" in ruby
    assert (
        "@interface AXXEdge" in (outs["objc"] / "agentrun" / "v1" / "Workflow.pbobjc.h").read_text()
    )


def test_buf_generate_with_the_checked_in_template(tmp_path: Path) -> None:
    npx = _tool("npx")
    _tool("protoc")
    _tool("protoc-gen-go")
    _tool("protoc-gen-go-grpc")
    result = _run(
        [
            npx,
            "--yes",
            "@bufbuild/buf@1.75.0",
            "generate",
            "--template",
            "buf.gen.yaml",
            "-o",
            str(tmp_path),
        ],
        cwd=ROOT,
    )
    if result.returncode != 0 and "ENOTFOUND" in result.stderr + result.stdout:
        pytest.skip("the npm registry is not reachable")
    assert result.returncode == 0, result.stdout + result.stderr
    gen = tmp_path / "gen"
    assert (gen / "go" / "agentrun" / "v1" / "workflow_service_grpc.pb.go").is_file()
    for lang in ("java", "csharp", "php", "ruby", "objc"):
        assert any((gen / lang).rglob("*")), f"buf generate wrote nothing for {lang}"
