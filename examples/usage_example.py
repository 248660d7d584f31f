"""An agent using the Python SDK: define a workflow, start an execution, stream its events,
answer a wait with a signal, and read the result. Run it from the repository's root, against a
server (`make serve` or `.venv/bin/agentrun serve` in another terminal), as often as you like:

    .venv/bin/python examples/usage_example.py [--server HOST:PORT] [--api-key KEY]

or alone, with a server in the same process: `.venv/bin/python examples/usage_example.py --embedded`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from agentrun.client import AsyncClient, ExecutionState, InvalidWorkflow

WORKFLOW = """
name: triage
description: Classify a ticket, wait for a human to approve, then reply.
input_schema:
  type: object
  required: [ticket]
  properties: {ticket: {type: string}}
nodes:
  - id: classify
    pass:
      value: {category: billing, ticket: "${{ input.ticket }}"}
  - id: approval
    needs: [classify]
    wait: {signal: approve, timeout: 1h}
  - id: reply
    needs: [approval]
    tool:
      name: core.echo
      args:
        to: "${{ nodes.classify.output.ticket }}"
        text: "Routed to ${{ nodes.classify.output.category }}, approved by ${{ nodes.approval.output.by }}"
"""


async def run(client: AsyncClient) -> ExecutionState:
    try:
        workflow = await client.create_workflow(source=WORKFLOW)
    except InvalidWorkflow as exc:  # field violations say where
        for violation in exc.violations:
            print("invalid:", violation)
        raise
    print(f"workflow {workflow.name} v{workflow.version}")

    # A request id makes the start idempotent: a retry with the same id (after a timeout, say)
    # returns this execution instead of starting another. One id per ticket run here; a fixed
    # id would return the finished execution of an earlier run of this script.
    request_id = f"triage-T-1042-{uuid.uuid4().hex[:12]}"
    execution = await client.start_execution("triage", {"ticket": "T-1042"}, request_id=request_id)
    print(f"started {execution.id}")

    # watch() resumes by itself after a dropped connection or a server restart.
    async for event in client.watch(execution):
        print(f"  #{event.sequence:<3} {event.type:<20} {event.node_id}")
        if event.type == "node.waiting" and event.node_id == "approval":
            # The signal id makes it apply once, even if this event is seen twice.
            await client.signal_execution(
                execution, "approve", {"by": "alice"}, signal_id=f"{execution.id}-approve"
            )

    done = await client.get_execution(execution)
    print(f"{done.state.value}: {done.output}")
    return done.state


@contextlib.asynccontextmanager
async def embedded_server() -> AsyncIterator[str]:
    """A server in this process over an in-memory store, for trying the example alone."""
    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.server import AgentrunServer
    from agentrun.storage.memory import MemoryStore

    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    server = AgentrunServer(engine)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await engine.stop(grace=0)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="default $AGENTRUN_ADDRESS or 127.0.0.1:50051")
    parser.add_argument("--api-key", help="default $AGENTRUN_API_KEY")
    parser.add_argument("--embedded", action="store_true", help="run a server in this process")
    args = parser.parse_args()
    async with contextlib.AsyncExitStack() as stack:
        target = (
            await stack.enter_async_context(embedded_server()) if args.embedded else args.server
        )
        client = await stack.enter_async_context(AsyncClient(target, api_key=args.api_key))
        state = await run(client)
    return 0 if state is ExecutionState.SUCCEEDED else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
