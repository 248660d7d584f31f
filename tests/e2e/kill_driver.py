"""A process that runs workflows on SQLite, for the kill -9 tests.

    python kill_driver.py DB LEDGER start N     # creates the workflow, starts N executions, runs them
    python kill_driver.py DB LEDGER resume      # resumes whatever is unfinished, runs it to the end

Every step appends `execution node attempt` to LEDGER (fsync'd) when its work is done, so
the test can count how often each step really ran.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agentrun.engine import Engine, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.sql import SqlStore

STEPS = int(os.environ.get("KILL_STEPS", "6"))
WORKFLOW = "name: steps\nnodes:\n" + "".join(
    f"  - {{id: s{i}, {'needs: [s' + str(i - 1) + '], ' if i else ''}"
    f"retry: {{max_attempts: 5, initial_interval: 1ms}}, tool: {{name: test.step, args: {{sleep: 0.05}}}}}}\n"
    for i in range(STEPS)
)


class Step(Tool):
    name = "test.step"
    effect = Effect.IDEMPOTENT

    def __init__(self, ledger: str) -> None:
        self.fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def call(self, args: Any, ctx: CallContext) -> Any:
        await asyncio.sleep(args["sleep"])
        os.write(self.fd, f"{ctx.execution_id} {ctx.node_id} {ctx.attempt}\n".encode())
        os.fsync(self.fd)
        return {"done": ctx.node_id}


async def main(db: str, ledger: str, mode: str, count: int) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{db}")
    await store.open()
    engine = Engine(store, tools=Registry([*core_tools(), Step(ledger)]), agents=default_agents())
    await engine.start()
    ids = []
    if mode == "start":
        await engine.create_workflow(load_workflow(WORKFLOW))
        for _ in range(count):
            ids.append((await engine.start_execution("steps", {})).id)
        print("started", flush=True)
    else:
        ids = [r.id for r in await store.list_executions("default", limit=10_000)]
    for execution_id in ids:
        await engine.wait(execution_id)
    await engine.stop(grace=1)
    await store.close()
    print("finished", flush=True)


if __name__ == "__main__":
    db, ledger, mode = sys.argv[1:4]
    asyncio.run(main(db, ledger, mode, int(sys.argv[4]) if len(sys.argv) > 4 else 0))
