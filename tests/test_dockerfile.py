"""The Docker image serves what `agentrun serve` serves, as far as can be checked without a
Docker daemon: both ports on and exposed, the console's assets in the package, no test extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CONSOLE = ROOT / "agentrun" / "server" / "console" / "static"


def _env() -> dict[str, str]:
    """The ENV settings of the Dockerfile (continuation lines joined)."""
    text = DOCKERFILE.replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.MULTILINE):
        pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


def _exposed() -> set[int]:
    return {
        int(p)
        for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE)
        for p in line.split()
    }


def test_both_ports_listen_on_every_interface_and_are_exposed() -> None:
    env = _env()
    for name in ("AGENTRUN_LISTEN", "AGENTRUN_HTTP_LISTEN"):
        host, _, port = env[name].rpartition(":")
        assert host == "0.0.0.0", f"{name}={env[name]} is not reachable from outside the container"
        assert int(port) in _exposed(), f"{name}'s port {port} is not in EXPOSE"
    # The health check asks the gRPC port from inside the container.
    assert env["AGENTRUN_ADDRESS"].rpartition(":")[2] == env["AGENTRUN_LISTEN"].rpartition(":")[2]


def test_no_test_extras_are_installed() -> None:
    pip_lines = [line for line in DOCKERFILE.splitlines() if "pip " in line]
    assert pip_lines
    # The only extras are the build argument's (runtime ones: kafka, mcp), empty by default.
    assert [line for line in pip_lines if "[" in line.replace("${EXTRAS:+[$EXTRAS]}", "")] == []
    (default,) = re.findall(r"^ARG EXTRAS=(.*)$", DOCKERFILE, re.MULTILINE)
    assert default.strip('"') == ""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    # What the image comment offers exists, and is not the test extras.
    (offered,) = re.findall(r"--build-arg EXTRAS=(\S+)", DOCKERFILE)
    assert set(offered.split(",")) <= set(extras) - {"dev"}


def test_console_assets_are_package_data() -> None:
    """The image installs the wheel; the wheel holds what package-data names."""
    assert (CONSOLE / "index.html").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["agentrun"]
    base = ROOT / "agentrun"
    covered = {p for pattern in patterns for p in base.glob(pattern) if p.is_file()}
    files = {p for p in CONSOLE.rglob("*") if p.is_file()}
    assert files and files <= covered, sorted(str(p) for p in files - covered)


def test_dockerignore_lets_the_package_in() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "!agentrun/" in lines
    after = lines[lines.index("!agentrun/") + 1 :]
    # Nothing after the package is let in excludes the console (or its assets) again.
    assert [
        line for line in after if "console" in line or "static" in line or "assets" in line
    ] == []
