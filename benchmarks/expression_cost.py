"""The worst event-loop stall while hostile expressions are refused (issue 13, item 1).

    .venv/bin/python benchmarks/expression_cost.py

Runs `size(input.l.filter(x, x in input.l))` over 10,000 integers (which evaluated for 12.7 s
before expressions had a cost bound) and `input.l.map(x, input.s)` over 2,000 x 50,000
characters through the engine on the memory store, with a coroutine ticking every millisecond
beside it; prints how the node ended and the longest the loop went without running the ticker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agentrun.engine import Engine, load_workflow  # noqa: E402
from agentrun.integrations import default_agents, default_tools  # noqa: E402
from agentrun.storage.memory import MemoryStore  # noqa: E402

CASES = [
    ("size(input.l.filter(x, x in input.l))", {"l": list(range(10_000))}),
    ("input.l.map(x, input.s)", {"l": list(range(2_000)), "s": "s" * 50_000}),
]


async def main() -> None:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    try:
        for n, (expr, input) in enumerate(CASES):
            name = f"cost-{n}"
            spec = f'name: {name}\nnodes:\n  - id: a\n    pass: {{value: "${{{{ {expr} }}}}"}}\n'
            await engine.create_workflow(load_workflow(spec))
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            worst = 0.0
            started = await engine.start_execution(name, input)
            final = await engine.wait(started.id, timeout=120)
            tick.cancel()
            error = (final.error or {}).get("message", "")[:60]
            print(f"{expr:40} {final.state.value:9} {error:60} worst loop stall {worst * 1000:6.1f} ms")
    finally:
        await engine.stop(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
