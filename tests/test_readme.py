"""README's tour runs as written: every `.venv/bin/agentrun ...` command of its `sh` blocks, in
order, in fresh processes; `serve` as a real server on a free port (the commands after it talk
to it through $AGENTRUN_ADDRESS), EXECUTION_ID replaced by what `start` printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.subprocess_server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
AGENTRUN = [sys.executable, "-c", "import sys; from agentrun.cli import main; sys.exit(main())"]


def tour() -> list[list[str]]:
    """The agentrun commands of README's sh blocks, continuation lines joined, comments cut."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(command, comments=True)
            if argv[:1] == [".venv/bin/agentrun"]:
                commands.append(argv[1:])
    return commands


@pytest.mark.timeout(240)
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    commands = tour()
    assert [c[0] for c in commands][:4] == ["validate", "graph", "run", "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    # `run` keeps its store out of the checkout; the server has its own (ServerProcess).
    env.update(PYTHONPATH=str(ROOT), AGENTRUN_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}")
    server = None
    execution_id = ""
    try:
        for argv in commands:
            if argv[0] == "serve":
                # It runs in its own directory: the files it names, from the checkout.
                args = [str(ROOT / a) if (ROOT / a).is_file() else a for a in argv[1:]]
                # On an empty database, as a reader's first `agentrun serve` is.
                server = ServerProcess(tmp_path, args=args, fresh=True).start(timeout=90)
                env["AGENTRUN_ADDRESS"] = server.address
                continue
            argv = [execution_id if a == "EXECUTION_ID" else a for a in argv]
            result = subprocess.run(
                [*AGENTRUN, *argv],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
            assert result.returncode == 0, (argv, result.stdout, result.stderr)
            if argv[0] == "start":
                execution_id = result.stdout.strip()
        assert server is not None and execution_id
        assert "SUCCEEDED" in result.stdout or argv[0] != "watch"
    finally:
        if server is not None:
            server.stop()
