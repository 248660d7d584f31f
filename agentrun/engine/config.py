"""`EngineConfig`: what an `Engine` is built with, from code or from a config file's engine
sections (`limits:`, `budgets:`, `prices:`, `circuit_breakers:`, `replica_id:`, `lease:`,
`event_retention:`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentrun.engine.budgets import BudgetConfig
from agentrun.engine.instrument import Instrumentation
from agentrun.engine.plan import BreakerSpec
from agentrun.engine.scheduler import SchedulerConfig


@dataclass(slots=True)
class EngineConfig:
    # Secrets visible to expressions as `secrets.NAME`.
    secrets: Mapping[str, str] | None = None
    # Seed for retry jitter (tests); None draws from the OS.
    seed: int | None = None
    # Circuit breakers from server config, by tool or provider name; they win over a
    # workflow's `circuit_breakers` for the same name.
    circuit_breakers: dict[str, BreakerSpec] | None = None
    # Traces and metrics hooks (agentrun.engine.instrument); None: no instrumentation.
    instrumentation: Instrumentation | None = None
    # Limits, quotas and rate-limit buckets (agentrun.engine.scheduler).
    scheduler: SchedulerConfig | None = None
    # Tenant budgets, the price table (agentrun.engine.budgets).
    budgets: BudgetConfig | None = None
    # This process among the replicas sharing a store. A replica restarted under the same id
    # takes its executions back at once; others wait for their leases to expire.
    replica_id: str = "local"
    # How long a replica's hold on an execution lasts without renewal (renewed every third).
    lease_seconds: float = 15.0
    # Whether this process takes over executions others left (at start: its own id's at once;
    # then, every lease/3, any whose lease expired). `agentrun run` sets False: it runs only
    # the execution it started and leaves the rest to the servers sharing its store.
    adopt: bool = True
    # Events of executions that ended longer ago than this are dropped (None: kept forever);
    # executions and their node records stay.
    event_retention_seconds: float | None = None
    # Whether an execution that only waits (for signals, wait timers) leaves memory, rebuilt
    # from the store when a signal, control request or its timer needs it (dag/runs.py).
    unload_idle: bool = True
    # Whether the engine serves state machine instances too (`agentrun serve`): it builds
    # its MachineEngine (`Engine.machines`) and starts and stops it with itself.
    state_machines: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, **overrides: Any) -> EngineConfig:
        """From a config file's engine sections, as `agentrun serve` and `agentrun run
        --config` read them: `limits:` (running-node limits, quotas, `rate_limits` buckets),
        `budgets:` and `prices:` (token and cost budgets, agentrun.engine.budgets),
        `circuit_breakers:` (by tool or provider name), `replica_id:`, `lease:` (a duration).
        Other sections (tools, agents, auth, ...) belong to others and are ignored here."""
        from agentrun.engine.durations import parse_duration

        data = dict(data or {})
        options: dict[str, Any] = {}
        if data.get("limits") is not None:
            options["scheduler"] = SchedulerConfig.from_mapping(data["limits"])
        if data.get("budgets") is not None or data.get("prices") is not None:
            options["budgets"] = BudgetConfig.from_mapping(data.get("budgets"), data.get("prices"))
        if data.get("circuit_breakers") is not None:
            options["circuit_breakers"] = _breaker_specs(data["circuit_breakers"])
        if data.get("replica_id"):
            options["replica_id"] = str(data["replica_id"])
        if data.get("lease") is not None:
            lease = data["lease"]
            options["lease_seconds"] = (
                parse_duration(lease) if isinstance(lease, str) else float(lease)
            )
        if data.get("event_retention") is not None:
            keep = data["event_retention"]
            options["event_retention_seconds"] = (
                parse_duration(keep) if isinstance(keep, str) else float(keep)
            )
        options.update(overrides)
        return cls(**options)


def _breaker_specs(data: Any) -> dict[str, BreakerSpec]:
    from agentrun.engine.durations import parse_duration

    if not isinstance(data, Mapping):
        raise ValueError("circuit_breakers: expected a mapping of tool or provider names")
    breakers = {}
    for name, spec in data.items():
        spec = dict(spec or {})
        for key in ("window", "reset_timeout"):
            if isinstance(spec.get(key), str):
                spec[key] = parse_duration(spec[key])
        unknown = set(spec) - set(BreakerSpec.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"circuit_breakers.{name}: unknown fields {', '.join(sorted(unknown))}"
            )
        breakers[str(name)] = BreakerSpec(**spec)
    return breakers
