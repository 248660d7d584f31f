"""A process on the memory store loads no database driver or server library.

SQLAlchemy alone is ~30 MiB of RSS: the engine, the memory store and the store factory import
the SQL modules only when a SQL store is opened (issue 18: the 10k-node DAG's peak RSS). httpx
(~0.15 s of every start) waits for the first HTTP tool call or model call.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "asyncpg", "aiosqlite", "grpc", "opentelemetry", "httpx")

CODE = f"""
import asyncio, json, sys
from agentrun.engine import Engine, load_workflow
from agentrun.integrations import default_tools, default_agents
from agentrun.storage.factory import open_store

SPEC = '''
name: light
nodes:
  - {{id: a, tool: {{name: core.echo, args: {{n: 1}}}}}}
  - {{id: b, needs: [a], pass: {{value: "${{{{ nodes.a.output.n + 1 }}}}"}}}}
'''

async def main():
    store = await open_store("memory")
    engine = Engine(store, tools=default_tools(), agents=default_agents())
    await engine.create_workflow(load_workflow(SPEC))
    ex = await engine.start_execution("light", {{}})
    final = await engine.wait(ex.id)
    await engine.stop()
    await store.close()
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
    print(final.state.value, json.dumps(final.output, separators=(",", ":")), ",".join(loaded) or "-")

asyncio.run(main())
"""


def test_memory_store_engine_loads_no_sql_or_server_modules() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    state, output, loaded = out.stdout.split()
    assert (state, output) == ("SUCCEEDED", '{"b":2}')
    assert loaded == "-", f"imported with the memory store: {loaded}"


def test_sql_url_still_resolves_to_its_async_driver() -> None:
    code = (
        "import sys\n"
        "from agentrun.storage.factory import resolve_url\n"
        "print(resolve_url('memory'), 'sqlalchemy' in sys.modules)\n"
        "print(resolve_url('postgres://u@h/db'), resolve_url('sqlite:///x.db'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "memory",
        "False",
        "postgresql+asyncpg://u@h/db",
        "sqlite+aiosqlite:///x.db",
    ]
