"""What observability costs the engine: prints a table.

    .venv/bin/python benchmarks/tracing.py            # best of 7 runs per column
    .venv/bin/python benchmarks/tracing.py --quick    # best of 3

Columns, over the scenarios of benchmarks/engine.py (memory store):
  none        EngineConfig(instrumentation=None): a build without tracing
  off         what `agentrun serve` builds with tracing: none and no metrics port (the engine
              gets no instrumentation at all, so this is the same code path as `none`)
  metrics     Prometheus metrics only
  1%          traces sampled at 1% (in-memory exporter) + metrics
  100%        every span recorded (in-memory exporter) + metrics
Then the µs per recorded span: (100% - metrics) / spans. Runs alternate between columns so
that drift on a shared machine hits every column alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Python put benchmarks/ first on the path; its grpc.py would shadow the grpc package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "benchmarks")]
sys.path.insert(0, ROOT)


def _engine_benchmark() -> Any:
    """benchmarks/engine.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_bench_engine", os.path.join(ROOT, "benchmarks", "engine.py")
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_bench = _engine_benchmark()
chain, fan_out = _bench.chain, _bench.fan_out

COLUMNS = ("none", "off", "metrics", "1%", "100%")


def _observability(column: str) -> tuple[Any, Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentrun.server import ServerConfig
    from agentrun.server.observability import Metrics, Observability, make_provider

    if column == "none":
        return None, None
    if column == "off":
        return Observability.from_config(ServerConfig.load(env={})), None
    exporter = InMemorySpanExporter()
    provider = None
    if column != "metrics":
        ratio = 0.01 if column == "1%" else 1.0
        provider = make_provider(sample_ratio=ratio, processors=[SimpleSpanProcessor(exporter)])
    return Observability(tracer_provider=provider, metrics=Metrics()), exporter


async def _run_once(doc: dict[str, Any], column: str) -> tuple[float, int]:
    from google.protobuf import json_format

    from agentrun.engine import Engine, EngineConfig
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore
    from agentrun.v1 import workflow_pb2

    observability, exporter = _observability(column)
    instrumentation = observability.instrumentation() if observability is not None else None
    store = MemoryStore()
    await store.open()
    engine = Engine(
        store,
        tools=default_tools(),
        agents=default_agents(),
        config=EngineConfig(instrumentation=instrumentation),
    )
    spec = json_format.ParseDict(doc, workflow_pb2.WorkflowSpec())
    await engine.create_workflow(spec)
    t0 = time.perf_counter()
    ex = await engine.start_execution(doc["name"], {})
    final = await engine.wait(ex.id)
    elapsed = time.perf_counter() - t0
    assert final.state.value == "SUCCEEDED", final.state
    spans = len(exporter.get_finished_spans()) if exporter is not None else 0
    await store.close()
    if observability is not None:
        observability.close()
    return elapsed, spans


def span_microbench(n: int = 20_000) -> float:
    """µs to start and end one span with attributes, through a SimpleSpanProcessor into
    an in-memory exporter (what each recorded node attempt costs at least)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentrun.server.observability import make_provider

    provider = make_provider(processors=[SimpleSpanProcessor(InMemorySpanExporter())])
    tracer = provider.get_tracer("bench")
    attrs = {"agentrun.node.id": "n1", "agentrun.node.attempt": 1, "agentrun.node.kind": "tool"}
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            tracer.start_span("tool core.echo", attributes=attrs).end()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / n


SCENARIOS = [
    (
        "chain-tool",
        "100-node chain of core.echo tool nodes",
        "us/node",
        lambda: chain(100, "tool"),
        100,
    ),
    ("fan-out", "1,000-way fan-out of core.echo + join", "us/node", lambda: fan_out(1000), 1002),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    from agentrun.engine.tuning import tune_gc

    tune_gc()
    print(
        f"{'scenario':40} {'unit':8} " + " ".join(f"{c:>9}" for c in COLUMNS) + f" {'us/span':>8}"
    )
    for _key, label, unit, make, nodes in SCENARIOS:
        doc = make()
        best = {c: float("inf") for c in COLUMNS}
        spans = {c: 0 for c in COLUMNS}
        for _ in range(repeat):
            for column in COLUMNS:
                elapsed, n = asyncio.run(_run_once(doc, column))
                best[column] = min(best[column], elapsed)
                spans[column] = n
        per_node = {c: best[c] * 1e6 / nodes for c in COLUMNS}
        per_span = (best["100%"] - best["metrics"]) * 1e6 / max(1, spans["100%"])
        print(
            f"{label:40} {unit:8} "
            + " ".join(f"{per_node[c]:9.1f}" for c in COLUMNS)
            + f" {per_span:8.1f}"
        )
        print(f"{'':40} {'spans':8} " + " ".join(f"{spans[c]:9d}" for c in COLUMNS))
    print(f"one span, start+end, in-memory exporter: {span_microbench():.1f} us")
    print("off = none by construction: with tracing none and no metrics port the engine gets no")
    print("instrumentation and the server no telemetry interceptor. Best of N runs, alternating.")


if __name__ == "__main__":
    main()
