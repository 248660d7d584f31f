"""Secret redaction: secret values never reach the store, events, or anything built from them.

Expressions may use `secrets.NAME` (an HTTP tool's header, say); what a node returns or an
error says may then contain the value. Before a batch is committed, every string in it is
scrubbed of every secret value. The live run keeps the unredacted values, so successors in
the same process see what the node returned; after a restart they see the redacted ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
# Shorter values would blank out ordinary words.
MIN_SECRET_LENGTH = 4


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted(
            {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def value(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self._pattern.sub(MASK, value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value
