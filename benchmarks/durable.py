"""Durability at scale: committed node completions per second, and recovery after kill -9.

    .venv/bin/python benchmarks/durable.py            # every scenario, prints a table
    .venv/bin/python benchmarks/durable.py --quick    # smaller workloads
    .venv/bin/python benchmarks/durable.py --only throughput|recovery

Throughput: N executions of a 20-step chain of tool nodes whose every call is stored
(`stored_echo` of benchmarks/engine.py: `core.echo`, not pure; the pure `core.echo`'s calls are
computed inside the turn that makes them ready) (each completion is its own node commit, grouped with other executions' by the store's group commit), started at once;
the rate is N x 20 / (time from the first start to the last execution's end). SQLite is a file
with synchronous=FULL; PostgreSQL is a private server started for the run (initdb, fsync on,
synchronous_commit on), so the shared one's other load does not count. With three replicas,
three processes each start and run a third of the executions on the same database.

Recovery: 1,000 executions whose step is running are left by SIGKILL; a new process under the
same replica id starts, and we time, from its spawn (interpreter start included): the engine
ready (every execution claimed and resumed), the first interrupted step called again, and the
last of the 1,000 called again.

Targets (issue 7): >= 3,000 completions/s on PostgreSQL with one replica on 2 cores; (issue 18)
the first step again < 1 s after restart. The recovery row also gives both times from the
store's opening, which leaves out the interpreter's start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = 20


def chain_yaml(name: str, steps: int, tool: str, args: str, retries: int = 3) -> str:
    lines = [f"name: {name}", "nodes:"]
    for i in range(steps):
        needs = f"needs: [s{i - 1}], " if i else ""
        lines.append(
            f"  - {{id: s{i}, {needs}retry: {{max_attempts: {retries}, initial_interval: 1ms}}, "
            f"tool: {{name: {tool}, args: {args}}}}}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- workers
async def throughput_worker(url: str, replica: str, executions: int, go_file: str) -> dict[str, Any]:
    from agentrun.engine import Engine, EngineConfig, load_workflow
    from agentrun.engine.errors import WorkflowNotFound
    from agentrun.engine.tuning import tune_gc
    from agentrun.integrations import Registry, default_agents
    from agentrun.integrations.core_tools import core_tools
    from agentrun.storage.factory import open_store
    from benchmarks.engine import STORED_ECHO, stored_echo

    store = await open_store(url)
    # A 60 s lease: renewed every 20 s, so no renewal falls inside the measured run. (Before
    # 53fb04a a renewal racing with a burst of starts stranded executions: the renew-race
    # regression test in tests/durability/test_engine_bugs.py.)
    engine = Engine(store, tools=Registry([*core_tools(), stored_echo()]), agents=default_agents(),
                    config=EngineConfig(replica_id=replica, lease_seconds=60))
    await engine.start()
    for _ in range(50):
        try:
            await engine.get_workflow("bench")
            break
        except WorkflowNotFound:
            if replica == "r0":
                await engine.create_workflow(load_workflow(chain_yaml("bench", STEPS, STORED_ECHO, "{x: 1}")))
                break
            await asyncio.sleep(0.1)
    tune_gc()
    print("ready", flush=True)
    while not os.path.exists(go_file):
        await asyncio.sleep(0.001)
    t0 = time.time()
    gate = asyncio.Semaphore(256)

    async def one(i: int) -> str:
        async with gate:
            return (await engine.start_execution("bench", {"i": i}, request_id=f"{replica}-{i}")).id

    ids = await asyncio.gather(*(one(i) for i in range(executions)))
    started = time.time()
    try:
        finals = await asyncio.wait_for(asyncio.gather(*(engine.wait(i) for i in ids)), 300)
        states = {f.state.value for f in finals}
    except TimeoutError:
        unfinished = await store.list_unfinished_executions()
        states = {f"{len(unfinished)} unfinished after 300 s"}
    t1 = time.time()
    await engine.stop(grace=1)
    await store.close()
    return {"t0": t0, "started": started, "t1": t1, "states": sorted(states), "executions": executions}


async def recovery_worker(url: str, mode: str, executions: int, spawned: float) -> None:
    """load: start `executions` one-step executions whose step blocks, print 'loaded' once all
    are running (then wait to be killed). resume: print timings as JSON once all steps were
    called again."""
    from agentrun.engine import Engine, EngineConfig, load_workflow
    from agentrun.engine.ports import CallContext, Effect, Tool
    from agentrun.engine.tuning import tune_gc
    from agentrun.integrations import Registry, default_agents
    from agentrun.storage.factory import open_store

    calls: list[float] = []
    all_called = asyncio.Event()

    class Block(Tool):
        name = "bench.block"
        effect = Effect.IDEMPOTENT

        async def call(self, args: Any, ctx: CallContext) -> Any:
            calls.append(time.time())
            if len(calls) >= executions:
                all_called.set()
            await asyncio.sleep(3600)

    t_imported = time.time()
    store = await open_store(url)
    t_open = time.time()
    engine = Engine(store, tools=Registry([Block()]), agents=default_agents(),
                    config=EngineConfig(replica_id="bench", lease_seconds=30))
    tune_gc()
    await engine.start()
    t_ready = time.time()
    if mode == "load":
        await engine.create_workflow(load_workflow(chain_yaml("blocked", 1, "bench.block", "{}")))
        gate = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            async with gate:
                await engine.start_execution("blocked", {"i": i})

        await asyncio.gather(*(one(i) for i in range(executions)))
        await asyncio.wait_for(all_called.wait(), 300)
        await asyncio.sleep(0.5)  # every RUNNING attempt committed
        print("loaded", flush=True)
        await asyncio.sleep(3600)
        return
    resumed = len(engine._runs)
    await asyncio.wait_for(all_called.wait(), 300)
    print(json.dumps({
        "spawned": spawned, "imported": t_imported, "open": t_open, "ready": t_ready, "resumed": resumed,
        "first_call": calls[0], "last_call": calls[-1], "calls": len(calls),
    }), flush=True)
    os._exit(0)  # the blocked steps stay unfinished; nothing to clean up


# ------------------------------------------------------------------------- scenarios
def _python_worker(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *args]


def throughput(url: str, replicas: int, executions: int) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix="agentrun-durable-bench-")
    go = os.path.join(work, "go")
    procs = []
    try:
        share = executions // replicas
        for r in range(replicas):
            procs.append(subprocess.Popen(
                _python_worker("--worker", "throughput", "--url", url, "--replica", f"r{r}",
                               "--executions", str(share), "--go", go),
                stdout=subprocess.PIPE, text=True, cwd=ROOT,
            ))
            if r == 0:  # r0 migrates and creates the workflow first
                assert procs[0].stdout.readline().strip() == "ready"
        for p in procs[1:]:
            assert p.stdout.readline().strip() == "ready"
        open(go, "w").close()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=900)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    total = sum(r["executions"] for r in results)
    states = sorted({s for r in results for s in r["states"]})
    return {"executions": total, "completions": total * STEPS, "seconds": t1 - t0,
            "rate": total * STEPS / (t1 - t0), "states": states}


def recovery(url: str, executions: int) -> dict[str, Any]:
    load = subprocess.Popen(_python_worker("--worker", "recovery", "--mode", "load", "--url", url,
                                           "--executions", str(executions), "--spawned", str(time.time())),
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = load.stdout.readline().strip()
        assert line == "loaded", f"load worker said {line!r}"
        load.send_signal(signal.SIGKILL)
        load.wait(30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    spawned = time.time()
    resume = subprocess.run(_python_worker("--worker", "recovery", "--mode", "resume", "--url", url,
                                           "--executions", str(executions), "--spawned", str(spawned)),
                            capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    if resume.returncode != 0:
        raise RuntimeError(f"resume worker failed:\n{resume.stderr[-3000:]}")
    r = json.loads(resume.stdout.strip().splitlines()[-1])
    return {
        "executions": executions,
        "resumed": r["resumed"],
        "imports": r["imported"] - spawned,
        "ready": r["ready"] - spawned,
        "claim_resume": r["ready"] - r["open"],
        "first_call": r["first_call"] - spawned,
        "last_call": r["last_call"] - spawned,
        # From the store opened: what the engine's recovery costs, without the interpreter's
        # start-up (which dominates on a loaded machine).
        "first_after_open": r["first_call"] - r["open"],
        "last_after_open": r["last_call"] - r["open"],
    }


class Postgres:
    """A private server for the run (see tests/durability/pg.py)."""

    def __enter__(self) -> Any:
        from tests.durability.pg import PrivatePostgres

        self.pg = PrivatePostgres(max_connections=300)
        self.pg.__enter__()
        return self.pg

    def fresh(self, name: str) -> str:
        self.pg.psql(f'CREATE DATABASE "{name}"', database="postgres")
        return self.pg.url.rsplit("/", 1)[0] + "/" + name

    def __exit__(self, *exc: object) -> None:
        self.pg.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["throughput", "recovery"])
    parser.add_argument("--worker", choices=["throughput", "recovery"])
    parser.add_argument("--url")
    parser.add_argument("--replica", default="r0")
    parser.add_argument("--executions", type=int, default=0)
    parser.add_argument("--go")
    parser.add_argument("--mode")
    parser.add_argument("--spawned", type=float, default=0.0)
    args = parser.parse_args()
    if args.worker == "throughput":
        print(json.dumps(asyncio.run(throughput_worker(args.url, args.replica, args.executions, args.go))))
        return
    if args.worker == "recovery":
        asyncio.run(recovery_worker(args.url, args.mode, args.executions, args.spawned))
        return

    # SIGTERM (e.g. `timeout`) unwinds through the finally blocks: children and the private
    # PostgreSQL server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = 300 if args.quick else 1500
    rec = 1000
    tmp = tempfile.mkdtemp(prefix="agentrun-durable-bench-")
    rows: list[tuple[str, str, str, str]] = []
    try:
        with Postgres() as server:
            pg = Postgres.__new__(Postgres)
            pg.pg = server
            if args.only in (None, "throughput"):
                for label, url, replicas, target in (
                    ("sqlite", f"sqlite+aiosqlite:///{tmp}/throughput.db", 1, "-"),
                    ("postgresql", pg.fresh("bench_t1"), 1, ">= 3000"),
                    ("postgresql", pg.fresh("bench_t3"), 3, "-"),
                ):
                    r = throughput(url, replicas, n)
                    ok = r["states"] == ["SUCCEEDED"]
                    rows.append((
                        f"node completions/s, {replicas} {'replica' if replicas == 1 else 'replicas'}",
                        label,
                        f"{r['rate']:,.0f}/s" + ("" if ok else f" states {r['states']}"),
                        target,
                    ))
                    print(f"  {label} x{replicas}: {r['completions']:,} completions in {r['seconds']:.2f}s",
                          file=sys.stderr)
            if args.only in (None, "recovery"):
                for label, url in (
                    ("sqlite", f"sqlite+aiosqlite:///{tmp}/recovery.db"),
                    ("postgresql", pg.fresh("bench_recovery")),
                ):
                    r = recovery(url, rec)
                    rows.append((
                        f"recovery after kill -9, {r['executions']:,} unfinished",
                        label,
                        (f"first step again {r['first_call']:.2f}s, all {r['last_call']:.2f}s "
                         f"({r['first_after_open']:.2f}s, {r['last_after_open']:.2f}s after open)"),
                        "first < 1 s",
                    ))
                    print(f"  {label}: imports {r['imports']:.2f}s, engine ready {r['ready']:.2f}s "
                          f"(claim + resume {r['claim_resume']:.2f}s, {r['resumed']} runs), first call "
                          f"{r['first_call']:.2f}s, last call {r['last_call']:.2f}s after spawn", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'scenario':44} {'backend':11} {'result':66} {'target':>11}")
    for scenario, backend, result, target in rows:
        print(f"{scenario:44} {backend:11} {result:66} {target:>11}")
    print(f"(throughput: {n:,} executions x {STEPS} stored tool steps; times after spawn include the "
          "interpreter's start-up; 2 shared cores)")


if __name__ == "__main__":
    main()
