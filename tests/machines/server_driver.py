"""A real agentrun server with StateMachineService over SQLite, for the kill -9 tests.

python server_driver.py DB      # prints `port N` once serving; runs until killed
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agentrun.engine import Engine
from agentrun.engine.machine import MachineEngine
from agentrun.integrations import default_agents, default_tools
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.state_machine_service import add_to_server
from agentrun.storage.sql import SqlStore


async def main(db: str) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{db}")
    await store.open()
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.start()
    machines = MachineEngine(engine)
    await machines.start()
    server = AgentrunServer(engine, ServerConfig.load(env={}))
    add_to_server(server, machines)
    port = await server.start("127.0.0.1:0")
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
