"""A real agentrun server with StateMachineService over SQLite, for the kill -9 tests.

python server_driver.py DB [LEDGER]   # prints `port N` once serving; runs until killed

DB is a SQLite file, or a database URL (`postgresql+asyncpg://...`). $DRIVER_REPLICA names the
replica (default `local`), $DRIVER_LEASE its lease in seconds (default 15).

With LEDGER, the tool `test.flaky` is registered: each call appends `instance action attempt`
to LEDGER (fsync'd, before it answers), and fails while its attempt is below `args.ok_on`, so
a test can count how often each attempt really ran across kills.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agentrun.engine import Engine, EngineConfig
from agentrun.engine.machine import MachineEngine
from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.storage.sql import SqlStore


class Flaky(Tool):
    name = "test.flaky"
    effect = Effect.IDEMPOTENT

    def __init__(self, ledger: str) -> None:
        self.ledger = ledger

    async def call(self, args: Any, ctx: CallContext) -> Any:
        # The line is on disk before the attempt answers.
        with open(self.ledger, "a") as out:
            print(ctx.execution_id, ctx.node_id, ctx.attempt, file=out, flush=True)
            os.fsync(out.fileno())
        if ctx.attempt < args.get("ok_on", 1):
            raise ToolFailure("tool_error", f"attempt {ctx.attempt} fails")
        return {"attempt": ctx.attempt}


async def main(db: str, ledger: str | None) -> None:
    store = SqlStore(db if "://" in db else f"sqlite+aiosqlite:///{db}")
    await store.open()
    tools = default_tools()
    if ledger:
        tools.register(Flaky(ledger))
    config = EngineConfig(
        replica_id=os.environ.get("DRIVER_REPLICA", "local"),
        lease_seconds=float(os.environ.get("DRIVER_LEASE", "15")),
    )
    engine = Engine(store, tools=tools, agents=default_agents(), config=config)
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    add_to_server(server, machines)
    port = await server.start("127.0.0.1:0")
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
