"""The in-process engine against its floors (issue 18): prints a table, asserts nothing.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/inproc_floor.py          # every row
    PYTHONPATH=$PWD .venv/bin/python benchmarks/inproc_floor.py --quick  # fewer repetitions

Rows, each with the floor it is compared to, measured in the same run:
- a 100-step chain of tool nodes in memory, per step, against one asyncio Task created and
  awaited per step (target: at most 3x): of a tool whose every call is stored RUNNING first
  (`stored_echo`, benchmarks/engine.py), and of the pure `core.echo`, whose calls are computed
  inside the turn that makes them ready;
- a `map` over 1,000 items against 1,000 static `core.echo` nodes (target: at most 2x);
- one CEL evaluation through `Expression.evaluate` on a node's activation, against the CEL
  library executing the same program on an already converted context;
- a 10,000-node layered DAG: registration (validate + compile + store), run, and the peak RSS
  of a fresh process doing both (targets: 150 ms, 150 ms, 100 MiB); then, in another process,
  registration's parts: the message checks, the whole compile (`compile_workflow`: the checks
  and the stored form included, built in one walk) and the stored form alone (`spec_to_dict`),
  best of 3 each.
Times are the best of N runs, wall clock (`--cpu`: the process's CPU time, for a loaded shared
machine); compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from engine import chain, layered, stored_echo

# Wall clock; `--cpu`: the process's CPU time (all threads), steadier on a shared machine.
CLOCK = time.perf_counter


def statics(n: int) -> dict[str, Any]:
    nodes = [{"id": f"b{i}", "tool": {"name": "core.echo", "args": {"i": i}}} for i in range(n)]
    return {"name": "statics", "nodes": nodes}


def mapped() -> dict[str, Any]:
    body = {"tool": {"name": "core.echo", "args": {"i": "${{ item }}"}}}
    return {
        "name": "mapped",
        "nodes": [{"id": "each", "map": {"items": "${{ input.items }}", "node": body}}],
    }


async def _engine() -> Any:
    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore

    store = MemoryStore()
    await store.open()
    tools = default_tools()
    tools.register(stored_echo())
    return Engine(store, tools=tools, agents=default_agents()), store


async def _register(engine: Any, doc: dict[str, Any]) -> None:
    from google.protobuf import json_format

    from agentrun.v1 import workflow_pb2

    await engine.create_workflow(json_format.ParseDict(doc, workflow_pb2.WorkflowSpec()))


async def _time_runs(engine: Any, name: str, input: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        ex = await engine.start_execution(name, input)
        final = await engine.wait(ex.id)
        best = min(best, CLOCK() - t0)
        if final.state.value != "SUCCEEDED":
            raise SystemExit(f"{name}: {final.state.value} {final.error}")
    return best


async def _task_floor(steps: int, repeat: int) -> float:
    async def step(i: int) -> int:
        return i

    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        for i in range(steps):
            await asyncio.create_task(step(i))
        best = min(best, CLOCK() - t0)
    return best


async def chain_rows(repeat: int) -> dict[str, float]:
    from agentrun.engine.tuning import tune_gc

    # As a process hosting the engine does (the server, `agentrun run`): without it, full
    # collections over every record the memory store keeps were ~15% of a chain step.
    tune_gc()
    engine, store = await _engine()
    await _register(engine, chain(100, "tool"))
    await _register(engine, chain(100, "stored"))
    await _register(engine, statics(1000))
    await _register(engine, mapped())
    items = {"items": list(range(1000))}
    await _time_runs(engine, "chain-tool", {}, 2)  # warm up
    await _time_runs(engine, "chain-stored", {}, 2)
    out = {
        "task": await _task_floor(100, repeat * 20) / 100,
        "chain": await _time_runs(engine, "chain-tool", {}, repeat * 4) / 100,
        "stored": await _time_runs(engine, "chain-stored", {}, repeat * 4) / 100,
        "statics": await _time_runs(engine, "statics", {}, repeat),
        "map": await _time_runs(engine, "mapped", items, repeat),
    }
    await engine.stop()
    await store.close()
    return out


def cel_rows(number: int) -> dict[str, float]:
    import cel

    from agentrun.engine.dag.values import activation as build
    from agentrun.engine.expressions import Expression, compile_template
    from agentrun.storage.records import ExecutionRecord, ExecutionState, NodeRecord, NodeState

    record = ExecutionRecord(
        "ex", "t", "wf", 1, ExecutionState.RUNNING, {"order": "o-1", "limit": 10}, 0.0
    )
    fetch = NodeRecord(
        "ex",
        "fetch",
        NodeState.SUCCEEDED,
        1,
        {"order": "o-1"},
        {"total": 12, "items": [{"sku": f"s{i}", "qty": i} for i in range(10)]},
    )
    records = {"fetch": fetch}

    def activation(names: frozenset[str], refs: frozenset[str]) -> Any:
        # The engine's own builder (what a node's call, edge or transform sees).
        return build(record, records, {}, names, refs)

    expr = Expression("nodes.fetch.output.total > input.limit", "bench")
    one = (
        timeit.Timer(
            lambda: expr.evaluate(activation(expr.names, expr.node_refs)), timer=CLOCK
        ).timeit(number)
        / number
    )
    args = compile_template(
        {
            "order": "${{ input.order }}",
            "total": "${{ nodes.fetch.output.total }}",
            "over": "${{ nodes.fetch.output.total > input.limit }}",
            "first": "${{ nodes.fetch.output.items[0].sku }}",
        },
        "bench",
    )
    template = (
        timeit.Timer(
            lambda: args.evaluate(activation(args.names, args.node_refs)), timer=CLOCK
        ).timeit(number)
        / number
    )
    program = cel.compile(expr.source)
    context = cel.Context(dict(activation(expr.names, expr.node_refs)))
    floor = timeit.Timer(lambda: program.execute(context), timer=CLOCK).timeit(number) / number
    return {"cel_one": one, "cel_template4": template, "cel_floor": floor}


async def layered_rows() -> dict[str, float]:
    from google.protobuf import json_format

    from agentrun.engine.tuning import tune_gc
    from agentrun.v1 import workflow_pb2

    tune_gc()
    engine, store = await _engine()
    spec = json_format.ParseDict(layered(10_000, 100), workflow_pb2.WorkflowSpec())
    t0 = CLOCK()
    await engine.create_workflow(spec)
    t1 = CLOCK()
    ex = await engine.start_execution("layered", {})
    final = await engine.wait(ex.id)
    t2 = CLOCK()
    await engine.stop()
    await store.close()
    return {
        "register": t1 - t0,
        "run": t2 - t1,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ok": float(final.state.value == "SUCCEEDED"),
    }


def layered_parts(repeat: int) -> dict[str, float]:
    """Registration's parts, each timed alone (a process of its own: the layered row's RSS is
    not this one's)."""
    from google.protobuf import json_format

    from agentrun.engine import compile_workflow
    from agentrun.engine.loader import spec_to_dict
    from agentrun.engine.message_checks import check_message
    from agentrun.engine.tuning import tune_gc
    from agentrun.integrations import default_agents, default_tools
    from agentrun.v1 import workflow_pb2

    tune_gc()
    tools, agents = default_tools(), default_agents()
    spec = json_format.ParseDict(layered(10_000, 100), workflow_pb2.WorkflowSpec())
    parts: dict[str, Callable[[], object]] = {
        "checks": lambda: check_message(spec),
        "compile": lambda: compile_workflow(spec, tools=tools, agents=agents),
        "stored": lambda: spec_to_dict(spec),
    }
    out = {}
    for name, part in parts.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = CLOCK()
            kept = part()
            best = min(best, CLOCK() - t0)
            del kept
        out[name] = best
    return out


def _child(what: str, quick: bool, cpu: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", what] + (["--quick"] if quick else [])
    cmd += ["--cpu"] if cpu else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of wall clock")
    args = parser.parse_args()
    if args.cpu:
        global CLOCK
        CLOCK = time.process_time
    repeat = 2 if args.quick else 5
    if args.child == "chain":
        print(json.dumps(asyncio.run(chain_rows(repeat))))
        return
    if args.child == "cel":
        print(json.dumps(cel_rows(2000 if args.quick else 20000)))
        return
    if args.child == "layered":
        print(json.dumps(asyncio.run(layered_rows())))
        return
    if args.child == "layered-parts":
        print(json.dumps(layered_parts(3)))
        return
    c = _child("chain", args.quick, args.cpu)
    e = _child("cel", args.quick, args.cpu)
    # Each layered run in its own process: its peak RSS is its own. Best of 3 (1 if quick).
    runs = [_child("layered", args.quick, args.cpu) for _ in range(1 if args.quick else 3)]
    lay = {k: min(r[k] for r in runs) for k in ("register", "run", "rss")}
    parts = _child("layered-parts", args.quick, args.cpu)
    rows = [
        ("asyncio Task created and awaited, per step", c["task"] * 1e6, "us", "floor", ""),
        (
            "100-step stored-tool chain (memory), per step",
            c["stored"] * 1e6,
            "us",
            f"{c['stored'] / c['task']:.1f}x",
            "3x",
        ),
        (
            "100-step core.echo chain (memory), per step",
            c["chain"] * 1e6,
            "us",
            f"{c['chain'] / c['task']:.1f}x",
            "3x",
        ),
        ("1,000 static core.echo nodes", c["statics"] * 1e3, "ms", "floor", ""),
        (
            "map over 1,000 items (core.echo)",
            c["map"] * 1e3,
            "ms",
            f"{c['map'] / c['statics']:.1f}x",
            "2x",
        ),
        ("CEL: program.execute on a built context", e["cel_floor"] * 1e6, "us", "floor", ""),
        ("CEL: one expression, its activation built", e["cel_one"] * 1e6, "us", "", ""),
        ("CEL: 4-expression args template, built", e["cel_template4"] * 1e6, "us", "", ""),
        ("10k layered DAG: registration", lay["register"] * 1e3, "ms", "", "150"),
        ("  of which message checks", parts["checks"] * 1e3, "ms", "", ""),
        ("  of which compile (checks, stored form)", parts["compile"] * 1e3, "ms", "", ""),
        ("  of which stored form (spec_to_dict)", parts["stored"] * 1e3, "ms", "", ""),
        ("10k layered DAG: run", lay["run"] * 1e3, "ms", "", "150"),
        ("10k layered DAG: peak RSS (register + run)", lay["rss"], "MiB", "", "100"),
    ]
    print(f"{'row':46} {'value':>9} {'unit':5} {'vs floor':>9} {'target':>7}")
    for label, value, unit, ratio, target in rows:
        print(f"{label:46} {value:9.1f} {unit:5} {ratio:>9} {target:>7}")


if __name__ == "__main__":
    main()
