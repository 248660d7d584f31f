"""`workers:` in the server config: the heartbeat contract and how often replicas look.

```yaml
workers:
  heartbeat: 2s     # a worker sends a heartbeat at least this often
  lease: 10s        # without one for this long, it loses the calls it holds
  poll: 1s          # at most this long between checks when no notification arrives
  keep: 10m         # finished calls stay in the store this long (then swept)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentrun.integrations.util import parse_seconds

MAX_SLOTS = 10_000


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    heartbeat: float = 2.0
    lease: float = 10.0
    poll: float = 1.0
    keep: float = 600.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> WorkersConfig:
        """From the `workers:` section; ValueError naming the key for a bad value."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("workers: expected a mapping")
        unknown = set(data) - {"heartbeat", "lease", "poll", "keep"}
        if unknown:
            raise ValueError(f"workers: unknown keys {', '.join(sorted(unknown))}")
        values: dict[str, float] = {}
        for key in ("heartbeat", "lease", "poll", "keep"):
            if data.get(key) is None:
                continue
            try:
                seconds = parse_seconds(data[key])
            except ValueError as exc:
                raise ValueError(f"workers.{key}: {exc}") from None
            if seconds <= 0:
                raise ValueError(f"workers.{key}: must be positive, not {data[key]!r}")
            values[key] = seconds
        config = cls(**values)
        if config.lease < 2 * config.heartbeat:
            raise ValueError(
                f"workers.lease ({config.lease}s) must be at least twice workers.heartbeat ({config.heartbeat}s)"
            )
        return config
