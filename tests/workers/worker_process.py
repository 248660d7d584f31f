"""A Python worker process for tests/workers (the `agentrun.worker` library, as a user runs it).

    python worker_process.py ADDRESS[,ADDRESS] EVENTS_FILE [SLOTS]

Serves `py.upper`, a sync function ({text, stall_first?} -> {upper, pid, attempt}; the first
attempt of a call sleeps `stall_first` seconds, so a test can kill or stop the worker
mid-call), and appends one JSON line per event to EVENTS_FILE: registered, call, answer,
refused (an answer the server did not apply), drained. SIGTERM drains.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from agentrun.worker import Call, Worker

address, events_file = sys.argv[1], sys.argv[2]
slots = int(sys.argv[3]) if len(sys.argv) > 3 else 4


def event(kind: str, **data: Any) -> None:
    with open(events_file, "a") as out:
        out.write(
            json.dumps({"event": kind, "pid": os.getpid(), "time": time.time(), **data}) + "\n"
        )


class Refusals(logging.Handler):
    """The library logs each refused answer (call id, reason)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("the server refused the answer") and record.args:
            call_id, reason = record.args  # type: ignore[misc]
            event("refused", call_id=call_id, reason=reason)


logging.getLogger("agentrun.worker").addHandler(Refusals())
worker = Worker(address.split(","), max_concurrent_calls=slots, display_name=f"py:{os.getpid()}")


@worker.tool(
    "py.upper",
    description="Upper-cases text (a Python worker process)",
    args_schema={
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}},
    },
    result_schema={"type": "object", "required": ["upper"]},
    idempotent=True,
)
def upper(args: dict[str, Any], call: Call) -> dict[str, Any]:
    # A sync tool (the library runs it in a thread): a withdrawn call still runs to its end
    # and answers, as a tool that cannot be interrupted would.
    event(
        "call",
        call_id=call.call_id,
        key=call.idempotency_key,
        attempt=call.attempt,
        node=call.node_id,
    )
    if call.attempt == 1 and args.get("stall_first"):
        time.sleep(float(args["stall_first"]))
    event("answer", call_id=call.call_id, attempt=call.attempt)
    return {"upper": args["text"].upper(), "pid": os.getpid(), "attempt": call.attempt}


async def main() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(worker.drain()))
    task = asyncio.ensure_future(worker.run())
    connected = asyncio.ensure_future(worker.connected.wait())
    await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
    if worker.connected.is_set():
        event("registered", name=worker.name)
    connected.cancel()
    await task
    event("drained", refused=worker.stats.refused)


asyncio.run(main())
