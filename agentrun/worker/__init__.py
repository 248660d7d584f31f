"""Serve tools to agentrun from any Python process (docs/workers.md).

    from agentrun.worker import Call, ToolError, Worker

    worker = Worker("127.0.0.1:50051", max_concurrent_calls=4)

    @worker.tool("billing.refund", args_schema={"type": "object"}, idempotent=True)
    async def refund(args: dict, call: Call) -> dict:
        if args["amount"] > 1000:
            raise ToolError("billing.too_large", "ask a person", retryable=False)
        return {"refunded": args["amount"], "key": call.idempotency_key}

    worker.run_forever()   # SIGTERM: no more calls, running ones answer, then it exits

Like the SDK (agentrun.client) it needs only the generated code (agentrun.v1) and grpcio.
"""

from agentrun.worker._types import Call, ToolDefinition, ToolError
from agentrun.worker._worker import Worker, WorkerRefused, WorkerStats

__all__ = ["Call", "ToolDefinition", "ToolError", "Worker", "WorkerRefused", "WorkerStats"]
