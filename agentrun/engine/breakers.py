"""Circuit breakers per tool and per agent provider, shared by every execution in the process.

closed -> open after `failure_threshold` failures within `window`; open fails calls at once
with `circuit_open` for `reset_timeout`; then half-open lets `half_open_calls` trial calls
through: a success closes the breaker, a failure opens it again.
"""

from __future__ import annotations

import enum
from collections import deque

from agentrun.engine.plan import BreakerSpec

# Failures that say the callee is unwell; a caller's mistake (invalid_args) or a business
# answer (payments.declined) does not trip a breaker.
TRIPPING = frozenset({"timeout", "tool_error", "agent_error", "rate_limited", "internal"})


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, name: str, spec: BreakerSpec) -> None:
        self.name = name
        self.spec = spec
        self.state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._trials = 0

    def allow(self, now: float) -> tuple[bool, BreakerState | None]:
        """Whether a call may go ahead, and the state it moved to if it changed."""
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.spec.reset_timeout:
                return False, None
            self.state = BreakerState.HALF_OPEN
            self._trials = 0
            changed: BreakerState | None = BreakerState.HALF_OPEN
        else:
            changed = None
        if self.state is BreakerState.HALF_OPEN:
            if self._trials >= self.spec.half_open_calls:
                return False, changed
            self._trials += 1
        return True, changed

    def record(self, ok: bool, error_type: str | None, now: float) -> BreakerState | None:
        """Counts a finished call; returns the new state when it changed."""
        if ok or error_type not in TRIPPING:
            if self.state is BreakerState.HALF_OPEN and ok:
                self.state = BreakerState.CLOSED
                self._failures.clear()
                return BreakerState.CLOSED
            if self.state is BreakerState.HALF_OPEN:
                self._trials = max(0, self._trials - 1)
            return None
        if self.state is BreakerState.HALF_OPEN:
            return self._open(now)
        failures = self._failures
        failures.append(now)
        while failures and now - failures[0] > self.spec.window:
            failures.popleft()
        if self.state is BreakerState.CLOSED and len(failures) >= self.spec.failure_threshold:
            return self._open(now)
        return None

    def _open(self, now: float) -> BreakerState:
        self.state = BreakerState.OPEN
        self._opened_at = now
        self._failures.clear()
        return BreakerState.OPEN


class Breakers:
    """The process's breakers by name; config from the server, else the first workflow naming it."""

    def __init__(self, configured: dict[str, BreakerSpec] | None = None) -> None:
        self._configured = dict(configured or {})
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, workflow_specs: dict[str, BreakerSpec]) -> CircuitBreaker | None:
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        spec = self._configured.get(name) or workflow_specs.get(name)
        if spec is None:
            return None
        breaker = self._breakers[name] = CircuitBreaker(name, spec)
        return breaker
