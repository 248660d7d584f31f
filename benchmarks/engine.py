"""Engine speed and memory: prints a table.

    .venv/bin/python benchmarks/engine.py            # all scenarios, memory and SQLite
    .venv/bin/python benchmarks/engine.py --quick    # fewer repetitions

Each scenario runs in a fresh subprocess so that its peak RSS is its own. Times are wall
clock on this machine; the table says what each number covers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


STORED_ECHO = "bench.stored_echo"


def stored_echo() -> Any:
    """`core.echo` as a tool that is not pure (idempotent): its node is committed RUNNING before
    each call and its outcome after, as a call to any tool that acts on the world (HTTP, SQL, a
    model) is. `core.echo` itself is pure: its calls are computed inside the turn that makes
    them ready, as a pass node's value is, so a chain of them is one turn."""
    from agentrun.engine.ports import Effect
    from agentrun.integrations.core_tools import Echo

    class StoredEcho(Echo):
        name = STORED_ECHO
        description = "Returns its args; each call stored (benchmarks)."
        effect = Effect.IDEMPOTENT

    return StoredEcho()


def chain(n: int, kind: str) -> dict[str, Any]:
    """`kind`: pass, tool (`core.echo`, pure) or stored (`stored_echo`, registered by the
    caller)."""
    nodes = []
    for i in range(n):
        node: dict[str, Any] = {"id": f"n{i}"}
        if kind == "pass":
            node["pass"] = {"value": i}
        elif kind == "stored":
            node["tool"] = {"name": STORED_ECHO, "args": {"i": i}}
        else:
            node["tool"] = {"name": "core.echo", "args": {"i": i}}
        if i:
            node["needs"] = [f"n{i - 1}"]
        nodes.append(node)
    return {"name": f"chain-{kind}", "nodes": nodes}


def fan_out(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "root", "pass": {"value": 0}}]
    for i in range(n):
        nodes.append({"id": f"b{i}", "needs": ["root"], "tool": {"name": "core.echo", "args": {"i": i}}})
    nodes.append({"id": "join", "needs": [f"b{i}" for i in range(n)], "pass": {"value": "done"}})
    return {"name": "fan-out", "nodes": nodes}


def layered(n: int, width: int) -> dict[str, Any]:
    nodes = []
    for i in range(n):
        layer, pos = divmod(i, width)
        node: dict[str, Any] = {"id": f"n{i}", "pass": {"value": i}}
        if layer:
            base = (layer - 1) * width
            node["needs"] = sorted({f"n{base + pos}", f"n{base + (pos + 1) % width}"})
        nodes.append(node)
    return {"name": "layered", "nodes": nodes}


async def _run_once(
    doc: dict[str, Any], backend: str, include_compile: bool, copies: int = 1
) -> tuple[float, str]:
    from google.protobuf import json_format

    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore
    from agentrun.v1 import workflow_pb2

    if backend == "memory":
        store = MemoryStore()
    else:
        from agentrun.storage.sql import SqlStore

        path = os.path.join(tempfile.mkdtemp(), "bench.db")
        store = SqlStore(f"sqlite+aiosqlite:///{path}", synchronous="FULL")
    await store.open()
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    spec = json_format.ParseDict(doc, workflow_pb2.WorkflowSpec())
    if not include_compile:
        await engine.create_workflow(spec)
    t0 = time.perf_counter()
    if include_compile:
        await engine.create_workflow(spec)
    started = [await engine.start_execution(doc["name"], {}) for _ in range(copies)]
    finals = [await engine.wait(ex.id) for ex in started]
    elapsed = time.perf_counter() - t0
    final = next((f for f in finals if f.state.value != "SUCCEEDED"), finals[-1])
    await store.close()
    return elapsed, final.state.value


def scenario(name: str, backend: str, repeat: int) -> dict[str, Any]:
    if name == "chain-pass":
        doc, include_compile = chain(100, "pass"), False
    elif name == "chain-tool":
        doc, include_compile = chain(100, "tool"), False
    elif name == "fan-out":
        doc, include_compile = fan_out(1000), False
    elif name == "concurrent":
        doc, include_compile = chain(10, "tool"), False
    else:
        doc, include_compile = layered(10_000, 100), True
    from agentrun.engine.tuning import tune_gc

    tune_gc()
    best = float("inf")
    state = ""
    for _ in range(repeat):
        copies = 100 if name == "concurrent" else 1
        elapsed, state = asyncio.run(_run_once(doc, backend, include_compile, copies))
        best = min(best, elapsed)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": best, "state": state, "rss_mb": rss_mb}


ROWS = [
    ("chain-pass", "100-node chain of pass nodes", "us/node", lambda s: s * 1e6 / 100, "15"),
    ("chain-tool", "100-node chain of core.echo tool nodes", "us/node", lambda s: s * 1e6 / 100, "-"),
    ("fan-out", "1,000-way fan-out of core.echo + join", "ms", lambda s: s * 1e3, "20"),
    ("concurrent", "100 concurrent 10-node core.echo chains", "us/node", lambda s: s * 1e6 / 1000, "-"),
    ("layered", "10,000-node layered DAG, validate + run", "s", lambda s: s, "0.3"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario")
    parser.add_argument("--backend", default="memory")
    args = parser.parse_args()
    if args.scenario:
        repeat = 1 if args.backend == "sqlite" and args.scenario == "layered" else (2 if args.quick else 5)
        print(json.dumps(scenario(args.scenario, args.backend, repeat)))
        return
    print(f"{'scenario':44} {'backend':8} {'result':>10} {'unit':8} {'target':>7} {'peak RSS':>9}")
    for key, label, unit, convert, target in ROWS:
        for backend in ("memory", "sqlite"):
            cmd = [sys.executable, __file__, "--scenario", key, "--backend", backend]
            if args.quick:
                cmd.append("--quick")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
            r = json.loads(out.strip().splitlines()[-1])
            shown_target = target if backend == "memory" else ("150" if key in ("chain-tool", "concurrent") else "-")
            print(
                f"{label:44} {backend:8} {convert(r['seconds']):10.{2 if unit == 's' else 1}f} {unit:8} {shown_target:>7} "
                f"{r['rss_mb']:7.0f}MB" + ("" if r["state"] == "SUCCEEDED" else f"  ({r['state']})")
            )
    print("SQLite: WAL, synchronous=FULL, one fsync per commit; a commit carries every completion")
    print("that arrived in the same engine turn (group commit). Best of N runs.")


if __name__ == "__main__":
    main()
