"""Strict mypy errors in the modules pyproject's [tool.mypy] still exempts ("being refactored"):
one line per module with its count, so whoever finishes one knows its line can go.

Run from the repository root: `.venv/bin/python scripts/mypy_pending.py`. It checks the tree
with pyproject's own settings less that one override (a copy of the config in a temporary
file), so the counts are what `make lint` would report once the line is removed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The override's comment starts with this, and its block ends at `ignore_errors = true`.
MARKER = "# Being refactored"


def main() -> int:
    text = (ROOT / "pyproject.toml").read_text()
    start = text.find(MARKER)
    if start < 0:
        print("pyproject.toml exempts no module: nothing pending")
        return 0
    block_start = text.rfind("[[tool.mypy.overrides]]", 0, start)
    block_end = text.index("ignore_errors = true", start) + len("ignore_errors = true")
    exempt = re.findall(r'"(agentrun[\w.]*)"', text[start:block_end])
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=ROOT, delete=False) as config:
        config.write(text[:block_start] + text[block_end:])
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", config.name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        Path(config.name).unlink()
    counts: Counter[str] = Counter()
    for line in run.stdout.splitlines():
        match = re.match(r"(agentrun/[\w/]+)\.py:\d+: error:", line)
        if match:
            counts[match.group(1).removesuffix("/__init__").replace("/", ".")] += 1
    for module in exempt:
        count = counts.pop(module, 0)
        print(f"{count:5}  {module}" + ("" if count else "  (clean: remove its line)"))
    for module, count in sorted(counts.items()):
        print(f"{count:5}  {module}  (not exempt: make lint fails)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
