"""Retry policies and their delays, as FORMAT.md defines them."""

from __future__ import annotations

import enum
import fnmatch
import random
from dataclasses import dataclass


class Backoff(enum.StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class Jitter(enum.StrEnum):
    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


@dataclass(frozen=True, slots=True)
class RetrySpec:
    max_attempts: int = 1
    backoff: Backoff = Backoff.EXPONENTIAL
    initial_interval: float = 1.0
    max_interval: float = 60.0
    multiplier: float = 2.0
    jitter: Jitter = Jitter.NONE
    non_retryable: frozenset[str] = frozenset()

    def base_delay(self, attempt: int) -> float:
        """The delay before attempt `attempt + 1`, before jitter, capped at max_interval."""
        if self.backoff is Backoff.FIXED:
            delay = self.initial_interval
        elif self.backoff is Backoff.LINEAR:
            delay = self.initial_interval * attempt
        else:
            delay = self.initial_interval * self.multiplier ** (attempt - 1)
        return min(delay, self.max_interval) if self.max_interval > 0 else delay

    def delay(self, attempt: int, rng: random.Random) -> float:
        d = self.base_delay(attempt)
        if self.jitter is Jitter.FULL:
            return rng.uniform(0.0, d)
        if self.jitter is Jitter.EQUAL:
            return rng.uniform(d / 2, d)
        return d

    def allows_retry(self, attempt: int, error_type: str) -> bool:
        # A cancelled attempt, a broken expression or a switch with no match are never
        # cured by trying again.
        if error_type in _NEVER_RETRIED or error_type in self.non_retryable:
            return False
        if self.non_retryable and any(
            fnmatch.fnmatchcase(error_type, p) for p in self.non_retryable
        ):
            return False  # globs: `payments.*`
        return attempt < self.max_attempts


_NEVER_RETRIED = frozenset(
    {"cancelled", "expression_error", "no_choice_matched", "output_too_large", "input_too_large"}
)

NO_RETRY = RetrySpec()
