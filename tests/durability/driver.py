"""One engine process for the crash tests and the benchmark: kill it with SIGKILL at any moment,
start it again, and it carries on from the store.

    python -m tests.durability.driver --url URL --ledger FILE [--generation G]
        [--replica ID] [--lease SECONDS] [--executions N] [--steps S] [--sleep X]
        [--until-done | --forever]

Each start makes sure the workflow exists and issues the N starts with request ids `job-0`..
(idempotent: a restarted process re-issues them and gets the executions back), so a kill while
the starts are being issued loses none. Prints, each on its own line, flushed:

    spawned <epoch>          after imports, before the store opens
    ready <claimed> <epoch>  after Engine.start(): claimed executions are running again
    started <n> <epoch>      after the starts
    finished <epoch>         no execution is unfinished (with --until-done; then it exits 0)

SIGTERM stops it gracefully (leases handed back).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.errors import WorkflowNotFound
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.factory import open_store
from tests.durability.ledger import LedgerStep, steps_workflow


def say(*words: object) -> None:
    print(*words, flush=True)


async def main(args: argparse.Namespace) -> int:
    say("spawned", time.time())
    store = await open_store(args.url)
    tools = Registry(
        [*core_tools(), LedgerStep(args.ledger, replica=args.replica, generation=args.generation)]
    )
    engine = Engine(
        store,
        tools=tools,
        agents=default_agents(),
        config=EngineConfig(replica_id=args.replica, lease_seconds=args.lease),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await engine.start()
    say("ready", len(engine._runs), time.time())
    if args.executions:
        try:
            await engine.get_workflow(args.workflow)
        except WorkflowNotFound:
            await engine.create_workflow(
                load_workflow(steps_workflow(args.workflow, args.steps, args.sleep))
            )
        for i in range(args.executions):
            await engine.start_execution(args.workflow, {"job": i}, request_id=f"job-{i}")
        say("started", args.executions, time.time())
    try:
        while not stop.is_set():
            if args.until_done and not await store.list_unfinished_executions():
                say("finished", time.time())
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
    finally:
        await engine.stop(grace=1)
        await store.close()
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--generation", default="0")
    p.add_argument("--replica", default="local")
    p.add_argument("--lease", type=float, default=15.0)
    p.add_argument("--workflow", default="steps")
    p.add_argument("--executions", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sleep", type=float, default=0.02)
    p.add_argument("--until-done", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
