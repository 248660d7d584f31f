"""A process running sagas on SQLite, for the kill -9 compensation tests.

    python saga_driver.py DB LEDGER N SEED [STAGGER]

Each run opens the store, resumes whatever is unfinished (Engine.start), makes sure the three
workflows exist (`saga-reverse`, `saga-sequential`, `saga-parallel`), issues the N starts with
request ids `saga-0`.. (idempotent: a restarted process re-issues them and gets the same
executions back, so a kill while they are being issued loses none), waits until every one is
final, and exits. New starts are spaced STAGGER seconds apart (default 0.1) so that kills find
executions in every phase. Prints, flushed, each on its own line:

    ready                 after Engine.start(): claimed executions run again
    started N             after the starts
    finished              all N are final

Every workflow: `flight`, then `hotel` and `car` in parallel, then `insurance` (all four with
`compensate`), `note` (none), and `charge`, which fails with `booking.declined`; a `compensate`
error handler undoes the rest. The tools append to LEDGER (fsync'd; O_APPEND lines from
successive processes never interleave):

    start do|undo|fail EXECUTION NODE ATTEMPT KEY      before the side effect
    done  do|undo|fail EXECUTION NODE ATTEMPT KEY      after it (an undo answers 80ms later)

KEY is the CallContext idempotency key (`EXECUTION/NODE`, `EXECUTION/NODE/compensate`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.errors import WorkflowNotFound
from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.sql import SqlStore

STRATEGIES = ("reverse", "sequential", "parallel")
COMPENSABLE = ("flight", "hotel", "car", "insurance")
FORWARD = ("flight", "hotel", "car", "insurance", "note")


def workflow(strategy: str) -> str:
    def undo(node: str) -> str:
        return (
            f'    compensate: {{tool: {{name: saga.undo, args: {{sleep: "${{{{ input.undo.{node} }}}}", '
            f'ref: "${{{{ output.ref }}}}", after: 0.08}}}}}}\n'
        )

    def step(node: str, needs: list[str], compensable: bool) -> str:
        text = f"  - id: {node}\n"
        if needs:
            text += f"    needs: [{', '.join(needs)}]\n"
        text += f'    tool: {{name: saga.do, args: {{sleep: "${{{{ input.sleep.{node} }}}}"}}}}\n'
        return text + (undo(node) if compensable else "")

    return (
        f"name: saga-{strategy}\n"
        f"compensation: {{strategy: {strategy}}}\n"
        # A kill interrupts attempts; an interrupted attempt fails with `internal` and is
        # retried, so every execution reaches its saga.
        "defaults:\n  retry: {max_attempts: 50, backoff: fixed, initial_interval: 10ms}\n"
        "error_handlers:\n"
        "  - match: {nodes: charge, errors: [booking.declined]}\n"
        "    action: compensate\n"
        "nodes:\n"
        + step("flight", [], True)
        + step("hotel", ["flight"], True)
        + step("car", ["flight"], True)
        + step("insurance", ["hotel", "car"], True)
        + step("note", ["insurance"], False)
        + "  - id: charge\n"
        "    needs: [note]\n"
        '    tool: {name: saga.do, args: {sleep: "${{ input.sleep.charge }}", fail: booking.declined}}\n'
        "    retry: {max_attempts: 50, backoff: fixed, initial_interval: 10ms, non_retryable: [booking.declined]}\n"
    )


def execution_input(seed: int, index: int) -> dict[str, Any]:
    rng = random.Random(seed * 100_003 + index)
    return {
        "sleep": {n: round(rng.uniform(0.05, 0.25), 3) for n in (*FORWARD, "charge")},
        "undo": {n: round(rng.uniform(0.05, 0.2), 3) for n in COMPENSABLE},
    }


class Ledger:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, *words: object) -> None:
        os.write(self.fd, (" ".join(str(w) for w in words) + "\n").encode())
        os.fsync(self.fd)


class Step(Tool):
    effect = Effect.COMPENSABLE

    def __init__(self, name: str, ledger: Ledger) -> None:
        self.name = name
        self.ledger = ledger

    async def call(self, args: Any, ctx: CallContext) -> Any:
        args = args or {}
        kind = "fail" if args.get("fail") else ("undo" if self.name == "saga.undo" else "do")
        where = (ctx.execution_id, ctx.node_id, ctx.attempt, ctx.idempotency_key)
        self.ledger.append("start", kind, *where)
        await asyncio.sleep(float(args.get("sleep") or 0))
        self.ledger.append("done", kind, *where)
        # The answer takes a while to come back after the side effect (an undo's `after`): a
        # kill then repeats a call that was applied but not committed.
        await asyncio.sleep(float(args.get("after") or 0))
        if args.get("fail"):
            raise ToolFailure(args["fail"], f"{ctx.node_id} declined")
        return {"ref": f"{ctx.node_id}-{ctx.execution_id[-6:]}"}


def say(*words: object) -> None:
    print(*words, flush=True)


async def main(db: str, ledger_path: str, count: int, seed: int, stagger: float) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{db}")
    await store.open()
    ledger = Ledger(ledger_path)
    engine = Engine(
        store,
        tools=Registry([*core_tools(), Step("saga.do", ledger), Step("saga.undo", ledger)]),
        agents=default_agents(),
        config=EngineConfig(seed=seed),
    )
    await engine.start()
    say("ready")
    for strategy in STRATEGIES:
        try:
            await engine.get_workflow(f"saga-{strategy}")
        except WorkflowNotFound:
            await engine.create_workflow(load_workflow(workflow(strategy)))
    began = time.time()
    ids = []
    for i in range(count):
        record = await engine.start_execution(
            f"saga-{STRATEGIES[i % len(STRATEGIES)]}",
            execution_input(seed, i),
            request_id=f"saga-{i}",
        )
        ids.append(record.id)
        if record.created_at >= began and i + 1 < count:
            await asyncio.sleep(stagger)  # a new one: space them out
    say("started", len(ids))
    for execution_id in ids:
        await engine.wait(execution_id)
    say("finished")
    await engine.stop(grace=1)
    await store.close()


if __name__ == "__main__":
    db, ledger_path, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    stagger = float(sys.argv[5]) if len(sys.argv) > 5 else 0.1
    asyncio.run(main(db, ledger_path, count, seed, stagger))
