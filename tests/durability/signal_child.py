"""A child process for test_signal_one_commit.py: an engine on a SQLite file with executions
waiting for the signal `go`, signalled one after another; each answered signal's execution id
is appended to a ledger (fsynced) before the next is sent, so that a kill -9 finds in the
ledger only signals the engine answered. MODE `answer` answers each one's wait (AnswerWait)
instead of signalling it by name.

    python tests/durability/signal_child.py URL LEDGER EXECUTIONS [signal|answer]

Prints `ready` once its executions wait, `done` once every one is signalled and ended."""

from __future__ import annotations

import asyncio
import os
import sys

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.factory import open_store
from agentrun.storage.records import ExecutionState

APPROVE = """
name: approve
nodes:
  - {id: ask, wait: {signal: go}}
  - {id: after, needs: [ask], pass: {value: "${{ nodes.ask.output }}"}}
"""


async def main(url: str, ledger: str, count: int, mode: str) -> None:
    store = await open_store(url)
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id="signaller", lease_seconds=60),
    )
    await engine.start()
    ids = [r.id for r in await store.list_executions("default", limit=count + 1)]
    if not ids:
        await engine.create_workflow(load_workflow(APPROVE))
        ids = [(await engine.start_execution("approve", {"i": i})).id for i in range(count)]
    print("ready", flush=True)
    with open(ledger, "a") as out:
        for execution_id in sorted(ids):
            record = await store.get_execution(execution_id)
            assert record is not None
            if record.state is not ExecutionState.WAITING:
                continue
            if mode == "answer":
                [wait] = await engine.list_waits(execution_id=execution_id)
                await engine.answer_wait(wait_id=wait.ref.id, data={"to": execution_id})
            else:
                await engine.signal(
                    execution_id, "go", {"to": execution_id}, signal_id=f"s-{execution_id}"
                )
            out.write(execution_id + "\n")
            out.flush()
            os.fsync(out.fileno())
    for execution_id in ids:
        await engine.wait(execution_id, 30)
    print("done", flush=True)
    await engine.stop(grace=1)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), (sys.argv[4:] or ["signal"])[0]))
