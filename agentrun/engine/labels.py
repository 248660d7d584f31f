"""Routing labels: what a tool node asks of the workers that serve it (`labels: {region: eu}`)
and what a worker offers. One rule for both, so a label a node may ask for is one a worker
may offer: keys are lower-case words (`a-z`, `0-9`, `.`, `_`, `-`; up to 63 characters, a
letter or digit first), values non-empty words of letters, digits, `.`, `_`, `-` (up to 63)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from agentrun.engine.errors import Diagnostic

__all__ = ["MAX_LABELS", "label_problems"]

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
MAX_LABELS = 32


def label_problems(labels: Mapping[str, object], path: str) -> list[Diagnostic]:
    """Every bad key or value of `labels`, each at `path.KEY`."""
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(Diagnostic(path, f"at most {MAX_LABELS} labels, not {len(labels)}"))
    for key, value in labels.items():
        where = f"{path}.{key}" if key else path
        if not _KEY.match(key):
            problems.append(
                Diagnostic(
                    where,
                    f"label key {key!r} must be a lower-case word (a-z, 0-9, '.', '_', '-'; up to 63)",
                )
            )
        elif not isinstance(value, str) or not _VALUE.match(value):
            problems.append(
                Diagnostic(
                    where,
                    f"label value {value!r} must be a word (letters, digits, '.', '_', '-'; 1 to 63)",
                )
            )
    return problems
