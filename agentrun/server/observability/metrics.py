"""Prometheus metrics: what the server exports on `--metrics-port` (`GET /metrics`).

Names follow Prometheus conventions (`agentrun_` prefix, `_total` counters, `_seconds` in
base units) and every label has a bounded set of values: method and status code, workflow
name, node kind, provider and model, breaker name. Execution ids never become labels (the
trace view and traces have them).

The metric objects are small lock-free ones of our own, read by one collector at scrape time
(prometheus_client renders and serves them): the engine updates them on its loop, where a
lock per update would cost more than the update. An update is a dict lookup (`.labels(...)`,
cached by the caller) and a float addition; histograms find their bucket by bisection. The
scrape thread copies each family's values in one C-level step, so it never sees a dict
changing size. Each `Metrics` has its own registry, so several servers (tests) can live in
one process.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine

# Buckets for calls that take from a millisecond to minutes (RPCs, node attempts, executions).
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Store commits and bus lag: sub-millisecond to a few seconds.
FAST_SECONDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class _Value:
    """A counter's or gauge's value for one set of label values."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Buckets:
    """A histogram's counts for one set of label values: counts[i] are observations in
    (bounds[i-1], bounds[i]]; the last one is above every bound (+Inf)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: _Families
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._children[()] = self._new()
        registry.families.append(self)

    def _new(self) -> Any:
        return _Value()

    def labels(self, *values: str) -> Any:
        """The child for these label values (keep it: the lookup is the cost)."""
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            child = self._children[key] = self._new()
        return child

    def _snapshot(self) -> list[tuple[tuple[str, ...], Any]]:
        return list(self._children.items())  # one C-level copy: safe against the loop thread

    # Unlabelled families act as their only child.
    def inc(self, amount: float = 1.0) -> None:
        self._children[()].inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._children[()].dec(amount)

    def set(self, value: float) -> None:
        self._children[()].set(value)

    def observe(self, value: float) -> None:
        self._children[()].observe(value)

    def collect(self) -> Metric:
        """The family's samples now, for the registry's scrape."""
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self._snapshot():
            family.add_metric(key, child.value)
        return family


class Gauge(_Family):
    kind = "gauge"

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self._snapshot():
            family.add_metric(key, child.value)
        return family


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = SECONDS,
        registry: _Families,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new(self) -> Any:
        return _Buckets(self.bounds)

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*(repr(b) for b in self.bounds), "+Inf"]
        for key, child in self._snapshot():
            counts, total = list(child.counts), child.sum
            cumulative, running = [], 0
            for edge, count in zip(edges, counts):
                running += count
                cumulative.append((edge, running))
            family.add_metric(key, cumulative, total)
        return family


class _Families(Collector):
    def __init__(self) -> None:
        self.families: list[_Family] = []

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()


class Metrics:
    """Every metric agentrun exports, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        families = self._families = _Families()
        # gRPC
        self.rpc_requests = Counter(
            "agentrun_rpc_requests",
            "RPCs handled, by service, method and status code.",
            ("service", "method", "code"),
            registry=families,
        )
        self.rpc_duration = Histogram(
            "agentrun_rpc_duration_seconds",
            "Time to handle an RPC (a stream: its whole life).",
            ("service", "method", "code"),
            buckets=SECONDS,
            registry=families,
        )
        self.rpc_in_flight = Gauge(
            "agentrun_rpc_in_flight",
            "RPCs being handled now (streams included).",
            ("service", "method"),
            registry=families,
        )
        # Executions
        self.executions_started = Counter(
            "agentrun_executions_started",
            "Executions that began running in this process "
            "(fresh, resumed after a restart, or rerun).",
            ("workflow",),
            registry=families,
        )
        self.executions_finished = Counter(
            "agentrun_executions_finished",
            "Executions that reached a final state.",
            ("workflow", "status"),
            registry=families,
        )
        self.execution_duration = Histogram(
            "agentrun_execution_duration_seconds",
            "From the start of an execution to its final state.",
            ("workflow", "status"),
            buckets=SECONDS,
            registry=families,
        )
        self.executions_running = Gauge(
            "agentrun_executions_running",
            "Executions running in this process.",
            ("workflow",),
            registry=families,
        )
        # State machine instances
        self.instances_started = Counter(
            "agentrun_instances_started",
            "State machine instances created in this process.",
            ("workflow",),
            registry=families,
        )
        self.instance_entries = Counter(
            "agentrun_instance_entries",
            "History entries committed for state machine instances, by kind "
            "(CREATED, TRANSITION, NO_TRANSITION, REJECTED, ABORTED, CANCELLED).",
            ("workflow", "kind"),
            registry=families,
        )
        self.instances_finished = Counter(
            "agentrun_instances_finished",
            "State machine instances that reached a final state (COMPLETED, FAILED, CANCELLED).",
            ("workflow", "status"),
            registry=families,
        )
        self.instance_duration = Histogram(
            "agentrun_instance_duration_seconds",
            "From the creation of a state machine instance to its final state.",
            ("workflow", "status"),
            buckets=SECONDS,
            registry=families,
        )
        # Nodes
        self.node_duration = Histogram(
            "agentrun_node_duration_seconds",
            "One attempt of a tool, agent or workflow node (or "
            "map item, compensation, fallback), by kind and outcome.",
            ("kind", "outcome"),
            buckets=SECONDS,
            registry=families,
        )
        self.nodes_running = Gauge(
            "agentrun_nodes_running",
            "Tool, agent and workflow calls running now.",
            ("kind",),
            registry=families,
        )
        self.nodes_finished = Counter(
            "agentrun_nodes_finished",
            "Nodes that reached a final state, by status.",
            ("status",),
            registry=families,
        )
        self.node_retries = Counter(
            "agentrun_node_retries",
            "Attempts that failed and are retried after a delay.",
            ("workflow",),
            registry=families,
        )
        self.compensations = Counter(
            "agentrun_compensations",
            "Compensations run (saga), by outcome.",
            ("workflow", "outcome"),
            registry=families,
        )
        self.queue_wait = Histogram(
            "agentrun_node_queue_wait_seconds",
            "Time a ready call waited for a scheduler slot (limits, rate-limit buckets).",
            buckets=SECONDS,
            registry=families,
        )
        self.rate_limit_waits = Counter(
            "agentrun_rate_limit_waits",
            "Calls that waited for a rate-limit bucket token.",
            registry=families,
        )
        # Breakers
        self.breaker_state = Gauge(
            "agentrun_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("name",),
            registry=families,
        )
        self.breaker_transitions = Counter(
            "agentrun_circuit_breaker_transitions",
            "Circuit breaker state changes, by new state.",
            ("name", "state"),
            registry=families,
        )
        # Store and events
        self.store_commit = Histogram(
            "agentrun_store_commit_duration_seconds",
            "Time to commit one batch of an execution's changes to the store.",
            buckets=FAST_SECONDS,
            registry=families,
        )
        self.events = Counter(
            "agentrun_events",
            "Execution events committed.",
            registry=families,
        )
        self.bus_lag = Histogram(
            "agentrun_event_bus_lag_seconds",
            "From an event's commit to its publication on the "
            "configured event bus (NATS, Kafka); empty without a bus.",
            buckets=FAST_SECONDS,
            registry=families,
        )
        # LLM use
        self.llm_tokens = Counter(
            "agentrun_llm_tokens",
            "LLM tokens used, by provider, model and type (prompt, completion; cached: the part of prompt read from a cache).",
            ("provider", "model", "type"),
            registry=families,
        )
        self.llm_cost = Counter(
            "agentrun_llm_cost_usd",
            "LLM cost, from the server's price table (else as the provider reports it), in its currency (US dollars by convention).",
            ("provider", "model"),
            registry=families,
        )
        self.registry.register(self._families)
        self._sources = _EngineCollector()
        self.registry.register(self._sources)
        self._server: Any = None
        self._thread: Any = None
        # Cached children, by label values.
        self._rpc: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    # ----------------------------------------------------------------- engine gauges
    def watch_engine(self, engine: Engine) -> None:
        """Exports the engine's scheduler queue and running-slot counts at scrape time."""
        self._sources.engines.append(engine)

    # ----------------------------------------------------------------- RPCs
    def rpc_children(self, service: str, method: str, code: str) -> tuple[Any, Any]:
        key = (service, method, code)
        children = self._rpc.get(key)
        if children is None:
            children = self._rpc[key] = (
                self.rpc_requests.labels(service, method, code),
                self.rpc_duration.labels(service, method, code),
            )
        return children

    def observe_bus_lag(self, seconds: float) -> None:
        """For event-bus adapters: time from an event's commit (`event.time`) to its publication."""
        self.bus_lag.observe(max(0.0, seconds))

    # ----------------------------------------------------------------- HTTP endpoint
    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serves `/metrics` on a thread; returns the bound port (useful with 0)."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def names(self) -> set[str]:
        """The metric family names exported (`_total`, `_bucket`, ... sample names included)."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum"),
        }
        out: set[str] = set()
        for family in self.registry.collect():
            names = [family.name + s for s in suffixes.get(family.type, ("",))]
            out.update(names)
            out.update(sample.name for sample in family.samples)
        return out


class _EngineCollector(Collector):
    """Gauges read from the engine when scraped (never on the engine's hot path)."""

    def __init__(self) -> None:
        self.engines: list[Engine] = []

    def describe(self) -> list[Any]:
        return [
            GaugeMetricFamily("agentrun_scheduler_queue_depth", ""),
            GaugeMetricFamily("agentrun_scheduler_running_slots", ""),
        ]

    def collect(self) -> Iterator[Any]:
        queued = GaugeMetricFamily(
            "agentrun_scheduler_queue_depth",
            "Ready calls waiting for a scheduler slot (limits, rate-limit buckets).",
        )
        running = GaugeMetricFamily(
            "agentrun_scheduler_running_slots",
            "Calls holding a scheduler slot (when limits apply).",
        )
        q = r = 0
        for engine in self.engines:
            stats = engine.scheduler.stats
            q += int(stats.queued)
            r += int(stats.running)
        queued.add_metric([], q)
        running.add_metric([], r)
        yield queued
        yield running


def exported_names(factory: Callable[[], Metrics] = Metrics) -> set[str]:
    """Every name a fresh Metrics exports (for checking dashboards against)."""
    return factory().names()
