"""Remote tools end to end in one process: a real gRPC server with WorkerService, the Python
worker library connected to it, workflows calling the workers' tools through the engine's
step invoker (retries, timeouts, the irreversible guard, result schemas)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from agentrun.client import ExecutionState, NodeState
from agentrun.v1 import worker_service_pb2 as pb
from agentrun.v1 import worker_service_pb2_grpc as pb_grpc
from agentrun.worker import Call, ToolError, Worker, WorkerRefused

from .conftest import Served

pytestmark = pytest.mark.timeout(60)


async def until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def serve(worker: Worker) -> asyncio.Task[None]:
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(worker.connected.wait(), 10)
    return task


async def workflow(served: Served, text: str) -> None:
    await served.client.create_workflow(source=text)


async def test_a_workflow_calls_a_python_workers_tool(served: Served) -> None:
    worker = served.worker(max_concurrent_calls=2, labels={"region": "eu"})
    seen: list[Call] = []

    @worker.tool(
        "shop.price",
        args_schema={"type": "object", "required": ["sku"]},
        result_schema={"type": "object", "required": ["price"]},
        idempotent=True,
    )
    async def price(args: dict[str, Any], call: Call) -> dict[str, Any]:
        seen.append(call)
        return {"price": len(args["sku"]) * 10, "sku": args["sku"]}

    await serve(worker)
    await workflow(
        served,
        """
name: pricing
nodes:
  - id: quote
    timeout: 30s
    tool: {name: shop.price, args: {sku: "${{ input.sku }}"}, labels: {region: eu}}
""",
    )
    started = await served.client.start_execution("pricing", {"sku": "abc"})
    done = await served.client.wait(started, timeout=20)
    assert done.state is ExecutionState.SUCCEEDED, done.error
    assert done.output == {"quote": {"price": 30, "sku": "abc"}}
    (call,) = seen
    assert call.execution_id == started.id and call.node_id == "quote" and call.attempt == 1
    assert call.idempotency_key == f"{started.id}/quote/1"
    assert call.labels == {"region": "eu"} and call.deadline is not None


async def test_a_sync_function_runs_in_a_thread_and_its_typed_error_is_final(
    served: Served,
) -> None:
    worker = served.worker()
    attempts: list[int] = []

    @worker.tool("pay.charge")
    def charge(args: dict[str, Any], call: Call) -> dict[str, Any]:
        attempts.append(call.attempt)
        if args["amount"] > 100:
            raise ToolError("payments.declined", "over the limit", retryable=False)
        raise ToolError("payments.busy", "try later", retry_after=0.01)

    await serve(worker)
    await workflow(
        served,
        """
name: pay
nodes:
  - id: charge
    retry: {max_attempts: 3, initial_interval: 10ms}
    tool: {name: pay.charge, args: {amount: "${{ input.amount }}"}}
""",
    )
    final = await served.client.wait(
        await served.client.start_execution("pay", {"amount": 500}), timeout=20
    )
    assert final.state is ExecutionState.FAILED
    assert final.error is not None and final.error.type == "payments.declined"
    assert attempts == [1]  # retryable: false ends it whatever the policy
    attempts.clear()
    final = await served.client.wait(
        await served.client.start_execution("pay", {"amount": 5}), timeout=20
    )
    assert final.error is not None and final.error.type == "payments.busy"
    assert attempts == [1, 2, 3]  # the policy's three attempts


async def test_a_result_that_breaks_the_result_schema_fails_the_node_naming_tool_and_path(
    served: Served,
) -> None:
    worker = served.worker()

    @worker.tool(
        "shop.stock", result_schema={"type": "object", "properties": {"count": {"type": "integer"}}}
    )
    async def stock(args: Any) -> dict[str, Any]:
        return {"count": "many"}

    await serve(worker)
    await workflow(served, "name: stock\nnodes:\n  - {id: s, tool: {name: shop.stock}}\n")
    final = await served.client.wait(await served.client.start_execution("stock", {}), timeout=20)
    assert final.state is ExecutionState.FAILED and final.error is not None
    assert final.error.type == "invalid_output"
    assert "'shop.stock'" in final.error.message and "result.count" in final.error.message
    assert "properties/count/type" in final.error.message


async def test_a_call_waits_ready_for_a_worker_and_runs_when_one_connects(served: Served) -> None:
    first = served.worker()

    @first.tool("slow.echo")
    async def echo(args: Any) -> Any:
        return args

    task = await serve(first)
    first.stop()
    await task  # the tool stays declared; nobody serves it now
    await workflow(
        served, "name: waits\nnodes:\n  - {id: e, tool: {name: slow.echo, args: {x: 1}}}\n"
    )
    started = await served.client.start_execution("waits", {})

    async def ready() -> bool:
        execution = await served.client.get_execution(started, include_nodes=True)
        return [n.state for n in execution.nodes] == [NodeState.READY]

    await until(ready, "the node shown READY")
    second = served.worker()
    second.tool("slow.echo")(echo)
    await serve(second)
    final = await served.client.wait(started, timeout=20)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"e": {"x": 1}}


async def test_the_node_timeout_fires_while_no_worker_serves_the_tool(served: Served) -> None:
    worker = served.worker()
    worker.tool("lonely.tool")(lambda args: args)
    task = await serve(worker)
    worker.stop()
    await task
    await workflow(
        served, "name: lonely\nnodes:\n  - {id: t, timeout: 300ms, tool: {name: lonely.tool}}\n"
    )
    final = await served.client.wait(await served.client.start_execution("lonely", {}), timeout=20)
    assert (
        final.state is ExecutionState.FAILED
        and final.error is not None
        and final.error.type == "timeout"
    )
    calls = await served.workers.repo.waiting(final.id)
    assert calls == []  # the call was withdrawn, no worker will get it


async def test_labels_route_calls_to_the_workers_that_offer_them(served: Served) -> None:
    us, eu = served.worker(labels={"region": "us"}), served.worker(labels={"region": "eu"})
    for w, where in ((us, "us"), (eu, "eu")):
        w.tool("geo.where")(_answers(where))
        await serve(w)
    await workflow(
        served,
        """
name: geo
nodes:
  - {id: e, tool: {name: geo.where, labels: {region: eu}}}
  - {id: u, tool: {name: geo.where, labels: {region: us}}}
""",
    )
    for _ in range(3):
        final = await served.client.wait(await served.client.start_execution("geo", {}), timeout=20)
        assert final.output == {"e": "eu", "u": "us"}


def _answers(value: str) -> Callable[[Any], str]:
    return lambda args: value


async def test_bad_labels_on_a_node_are_a_validation_error_naming_the_field(served: Served) -> None:
    from agentrun.client.errors import AgentrunError

    with pytest.raises(AgentrunError) as caught:
        await workflow(
            served,
            "name: bad\nnodes:\n  - {id: t, tool: {name: core.echo, labels: {Region: eu, zone: ''}}}\n",
        )
    text = str(caught.value)
    assert "nodes[0].tool.labels.Region" in text and "nodes[0].tool.labels.zone" in text


async def test_a_worker_never_gets_more_calls_than_its_slots(served: Served) -> None:
    worker = served.worker(max_concurrent_calls=3)
    now = 0
    peak = 0

    @worker.tool("work.slow")
    async def slow(args: Any) -> Any:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.05)
        now -= 1
        return args["i"] * 2

    await serve(worker)
    await workflow(
        served,
        """
name: fan
nodes:
  - id: m
    map:
      items: "${{ input.items }}"
      node: {tool: {name: work.slow, args: {i: "${{ item }}"}}}
""",
    )
    final = await served.client.wait(
        await served.client.start_execution("fan", {"items": list(range(20))}), timeout=30
    )
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {"m": [i * 2 for i in range(20)]}
    assert peak == worker.stats.max_in_flight == 3


async def test_a_disconnected_workers_call_is_retried_on_another_worker(served: Served) -> None:
    stuck, healthy = served.worker(), served.worker()
    entered = asyncio.Event()

    @stuck.tool("job.run", idempotent=True)
    async def hang(args: Any) -> Any:
        entered.set()
        await asyncio.sleep(3600)

    healthy.tool("job.run", idempotent=True)(lambda args, call: {"attempt": call.attempt})
    stuck_task = await serve(stuck)
    await workflow(
        served,
        """
name: job
nodes:
  - {id: j, retry: {max_attempts: 3, initial_interval: 10ms}, tool: {name: job.run}}
""",
    )
    started = await served.client.start_execution("job", {})
    await asyncio.wait_for(entered.wait(), 10)
    await serve(healthy)
    stuck.stop()  # the stream ends mid-call: the lease is lost at once
    await stuck_task
    final = await served.client.wait(started, timeout=20)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"j": {"attempt": 2}}
    events = [e async for e in served.client.list_execution_events(started)]
    failed = [e for e in events if e.type == "node.failed" or e.type == "node.retrying"]
    assert failed and "worker_lost" in str(failed[0].data)


async def test_an_irreversible_tool_is_not_retried_when_its_worker_is_lost(served: Served) -> None:
    worker = served.worker()
    entered = asyncio.Event()

    @worker.tool("bank.transfer", irreversible=True)
    async def transfer(args: Any) -> Any:
        entered.set()
        await asyncio.sleep(3600)

    task = await serve(worker)
    await workflow(
        served,
        """
name: transfer
nodes:
  - {id: t, retry: {max_attempts: 5, initial_interval: 10ms}, tool: {name: bank.transfer}}
""",
    )
    started = await served.client.start_execution("transfer", {})
    await asyncio.wait_for(entered.wait(), 10)
    worker.stop()
    await task
    final = await served.client.wait(started, timeout=20)
    assert final.state is ExecutionState.FAILED and final.error is not None
    assert final.error.type == "worker_lost"
    (node,) = (await served.client.get_execution(started, include_nodes=True)).nodes
    assert node.attempt == 1


async def test_list_workers_shows_tools_labels_and_load(served: Served) -> None:
    worker = served.worker(
        max_concurrent_calls=5, labels={"region": "eu"}, display_name="box-1", version="2.1"
    )
    release = asyncio.Event()

    @worker.tool("list.me", description="waits", args_schema={"type": "object"})
    async def wait(args: Any) -> Any:
        await release.wait()
        return 1

    await serve(worker)
    await workflow(served, "name: busy\nnodes:\n  - {id: b, tool: {name: list.me}}\n")
    started = await served.client.start_execution("busy", {})
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)

        async def busy() -> Any:
            answer = await stub.ListWorkers(pb.ListWorkersRequest())
            return answer.workers and answer.workers[0].active_calls == 1 and answer

        answer = await until(busy, "the worker's call counted")
        (w,) = answer.workers
        assert w.name == worker.name and w.display_name == "box-1" and w.version == "2.1"
        assert w.state == pb.Worker.STATE_SERVING and dict(w.labels) == {"region": "eu"}
        assert w.max_concurrent_calls == 5 and w.replica == "r1"
        assert [t.name for t in w.tools] == ["list.me"] and w.tools[0].description == "waits"
        none = await stub.ListWorkers(pb.ListWorkersRequest(filter='tool = "other.tool"'))
        assert list(none.workers) == []
    release.set()
    assert (await served.client.wait(started, timeout=20)).state is ExecutionState.SUCCEEDED


@pytest.mark.parametrize(
    ("tools", "slots", "field", "words"),
    [
        ([pb.WorkerTool(name="")], 1, "register.tools[0].name", "is required"),
        (
            [pb.WorkerTool(name="a.b"), pb.WorkerTool(name="a.b")],
            1,
            "register.tools[1].name",
            "twice",
        ),
        ([pb.WorkerTool(name="core.echo")], 1, "register.tools[0].name", "server itself"),
        ([pb.WorkerTool(name="bad name")], 1, "register.tools[0].name", "dotted words"),
        ([pb.WorkerTool(name="a.b")], 0, "register.max_concurrent_calls", "between 1 and"),
        ([], 1, "register.tools", "at least one"),
    ],
)
async def test_bad_registrations_are_invalid_argument_naming_the_field(
    served: Served, tools: list[pb.WorkerTool], slots: int, field: str, words: str
) -> None:
    await _refused(served, pb.RegisterWorker(tools=tools, max_concurrent_calls=slots), field, words)


async def test_a_bad_schema_is_invalid_argument_naming_the_schema_field(served: Served) -> None:
    tool = pb.WorkerTool(name="a.b")
    tool.result_schema.update({"type": "not-a-type"})
    await _refused(
        served,
        pb.RegisterWorker(tools=[tool], max_concurrent_calls=1),
        "register.tools[0].result_schema.type",
        "JSON Schema",
    )


async def _refused(served: Served, registration: pb.RegisterWorker, field: str, words: str) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    async with grpc.aio.insecure_channel(served.address) as channel:
        stream = pb_grpc.WorkerServiceStub(channel).Connect(
            iter([pb.ConnectRequest(register=registration)])
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and words in caught.value.details()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    assert field in fields


async def test_the_python_library_raises_worker_refused_for_a_bad_registration(
    served: Served,
) -> None:
    worker = served.worker(max_concurrent_calls=0)
    worker.tool("fine.name")(lambda args: args)
    with pytest.raises(WorkerRefused) as caught:
        await asyncio.wait_for(worker.run(), 10)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "register.max_concurrent_calls" in caught.value.details


async def test_sigterm_style_drain_lets_running_calls_answer(served: Served) -> None:
    worker = served.worker()
    entered = asyncio.Event()

    @worker.tool("drain.me")
    async def slow(args: Any) -> Any:
        entered.set()
        await asyncio.sleep(0.3)
        return "done"

    task = await serve(worker)
    await workflow(served, "name: drain\nnodes:\n  - {id: d, tool: {name: drain.me}}\n")
    started = await served.client.start_execution("drain", {})
    await asyncio.wait_for(entered.wait(), 10)
    await worker.drain(grace=10)
    await asyncio.wait_for(task, 10)  # run() returns once drained
    final = await served.client.wait(started, timeout=20)
    assert final.state is ExecutionState.SUCCEEDED and final.output == {"d": "done"}
    assert worker.stats.refused == 0


@pytest.mark.timeout(180)
async def test_a_thousand_calls_across_four_workers_keep_their_slots_and_the_items_order(
    served: Served,
) -> None:
    running: dict[int, int] = {}
    peaks: dict[int, int] = {}
    workers = [served.worker(max_concurrent_calls=4) for _ in range(4)]
    for n, w in enumerate(workers):

        async def double(args: Any, n: int = n) -> Any:
            running[n] = running.get(n, 0) + 1
            peaks[n] = max(peaks.get(n, 0), running[n])
            await asyncio.sleep(0.001 * (args["i"] % 5))  # answers out of order
            running[n] -= 1
            return {"i": args["i"], "twice": args["i"] * 2, "worker": n}

        w.tool("work.double")(double)
        await serve(w)
    await workflow(
        served,
        """
name: thousand
nodes:
  - id: m
    map:
      items: "${{ input.items }}"
      node: {tool: {name: work.double, args: {i: "${{ item }}"}}}
""",
    )
    final = await served.client.wait(
        await served.client.start_execution("thousand", {"items": list(range(1000))}), timeout=150
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    results = final.output["m"]
    assert [r["i"] for r in results] == list(range(1000)) and all(
        r["twice"] == 2 * r["i"] for r in results
    )
    assert len({r["worker"] for r in results}) == 4  # every worker served some
    assert max(peaks.values()) <= 4 and all(w.stats.max_in_flight <= 4 for w in workers)
    assert sum(w.stats.calls for w in workers) == 1000


async def test_progress_reported_by_a_worker_becomes_a_node_event(served: Served) -> None:
    worker = served.worker()

    @worker.tool("long.job")
    async def job(args: Any, call: Call) -> Any:
        call.progress(1, 3, "first third")
        await asyncio.sleep(0.8)  # several of the caller's polls (0.2 s)
        return "done"

    await serve(worker)
    await workflow(served, "name: progress\nnodes:\n  - {id: j, tool: {name: long.job}}\n")
    started = await served.client.start_execution("progress", {})
    final = await served.client.wait(started, timeout=20)
    assert final.state is ExecutionState.SUCCEEDED
    events = [e async for e in served.client.list_execution_events(started)]
    progress = [e for e in events if e.type == "tool.progress"]
    assert len(progress) == 1 and progress[0].node_id == "j"
    assert progress[0].data == {
        "tool": "long.job",
        "progress": 1,
        "total": 3,
        "message": "first third",
    }
