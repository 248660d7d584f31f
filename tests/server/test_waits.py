"""Approvals done right (issue 16 item 4), through a real gRPC server and the SDK: every wait
for a signal has its own id and callback token, ListWaits lists the pending ones, AnswerWait
answers one wait once; a replayed, late or earlier-attempt answer is FAILED_PRECONDITION and
changes nothing; data the wait's schema refuses is INVALID_ARGUMENT naming the path."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from agentrun.client import (
    AsyncClient,
    ExecutionState,
    IllegalTransition,
    InvalidArgument,
    NodeState,
)

pytestmark = pytest.mark.timeout(120)

SCHEMA = "{type: object, required: [approved], properties: {approved: {type: boolean}, by: {type: string}}}"

BRANCHES = f"""
name: branches
nodes:
  - id: legal
    wait: {{signal: approve, schema: {SCHEMA}}}
  - id: finance
    wait: {{signal: approve, schema: {SCHEMA}}}
  - id: both
    needs: [legal, finance]
    join: all
    pass: {{value: {{legal: "${{{{ nodes.legal.output }}}}", finance: "${{{{ nodes.finance.output }}}}"}}}}
output: "${{{{ nodes.both.output }}}}"
"""

MAPPED = f"""
name: mapped
nodes:
  - id: each
    map:
      items: "${{{{ input.docs }}}}"
      node:
        wait: {{signal: review, schema: {SCHEMA}}}
output: "${{{{ nodes.each.output }}}}"
"""

# Each attempt waits 2 s: long enough for the test's calls between attempt 2's start and its
# answer on a loaded machine (with 300 ms, attempt 2 had ended before the answer reached it).
RETRIED = f"""
name: retried
nodes:
  - id: each
    map:
      items: "${{{{ [1] }}}}"
      node:
        wait: {{signal: review, timeout: 2s, schema: {SCHEMA}}}
        retry: {{max_attempts: 2, initial_interval: 10ms}}
output: "${{{{ nodes.each.output }}}}"
"""

TIMED = """
name: timed
nodes:
  - id: ask
    wait: {signal: approve, timeout: 200ms}
"""


async def waits_of(client: AsyncClient, execution: Any, count: int) -> list[Any]:
    """The execution's pending waits, once there are `count` of them."""
    async with asyncio.timeout(60):
        while True:
            waits = [w async for w in client.list_waits(execution=execution)]
            if len(waits) >= count:
                return waits
            await asyncio.sleep(0.02)


async def tokens_of(client: AsyncClient, execution: Any) -> dict[str, str]:
    """wait id -> callback token, from the execution's `node.waiting` events."""
    return {
        e.data["wait_id"]: e.data["token"]
        async for e in client.list_execution_events(execution)
        if e.type == "node.waiting" and "token" in e.data
    }


async def received(client: AsyncClient, execution: Any) -> list[dict[str, Any]]:
    return [
        e.data async for e in client.list_execution_events(execution) if e.type == "signal.received"
    ]


async def test_two_approvals_in_parallel_branches_each_answered_once(client: AsyncClient) -> None:
    await client.create_workflow(source=BRANCHES)
    execution = await client.start_execution("branches", {})
    waits = await waits_of(client, execution, 2)
    assert {w.node_id for w in waits} == {"legal", "finance"}
    assert len({w.wait_id for w in waits}) == 2
    assert all(w.signal == "approve" and w.map_index is None and w.attempt == 1 for w in waits)
    assert all(w.schema["required"] == ["approved"] and w.start_time is not None for w in waits)
    legal = next(w for w in waits if w.node_id == "legal")
    finance = next(w for w in waits if w.node_id == "finance")

    # The schema is checked before anything is stored: the path is named.
    with pytest.raises(InvalidArgument) as bad:
        await client.answer_wait(legal, {"approved": "yes"})
    assert "data.approved" in str(bad.value)

    await client.answer_wait(finance.wait_id, {"approved": True, "by": "fin"})
    left = await waits_of(client, execution, 1)
    assert [w.wait_id for w in left] == [legal.wait_id]  # the other branch still waits

    token = (await tokens_of(client, execution))[legal.wait_id]
    done = await client.answer_wait(token=token, data={"approved": False, "by": "law"})
    final = await client.wait(done, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == {
        "legal": {"approved": False, "by": "law"},
        "finance": {"approved": True, "by": "fin"},
    }

    # Replays, by id or token, are refused and change nothing.
    for replay in (
        client.answer_wait(finance.wait_id, {"approved": False}),
        client.answer_wait(token=token, data={"approved": True}),
    ):
        with pytest.raises(IllegalTransition):
            await replay
    assert [w async for w in client.list_waits(execution=execution)] == []
    answers = await received(client, execution)
    assert sorted(a["wait_id"] for a in answers) == sorted([legal.wait_id, finance.wait_id])
    assert (await client.get_execution(execution)).output == final.output


async def test_ten_approvals_in_a_map_each_item_its_own(client: AsyncClient) -> None:
    await client.create_workflow(source=MAPPED)
    docs = [f"doc-{i}" for i in range(10)]
    execution = await client.start_execution("mapped", {"docs": docs})
    waits = await waits_of(client, execution, 10)
    assert sorted(w.map_index for w in waits) == list(range(10))
    assert {w.node_id for w in waits} == {"each"} and len({w.wait_id for w in waits}) == 10
    assert (await client.get_execution(execution)).state is ExecutionState.WAITING
    # Every page of the tenant's waits, three at a time, in (execution, item) order.
    paged = [w async for w in client.list_waits(page_size=3)]
    assert [w.wait_id for w in paged if w.execution_id == execution.id] == sorted(
        (w.wait_id for w in waits), key=lambda i: int(i.split("[")[1].split("]")[0])
    )
    tokens = await tokens_of(client, execution)
    by_index = {w.map_index: w for w in waits}

    async def answer(i: int) -> None:
        wait = by_index[i]
        data = {"approved": i % 2 == 0, "by": f"r{i}"}
        if i % 3 == 0:
            await client.answer_wait(token=tokens[wait.wait_id], data=data)
        else:
            await client.answer_wait(wait, data)

    # Out of order and at once: each answer reaches its own item.
    await asyncio.gather(*(answer(i) for i in reversed(range(10))))
    final = await client.wait(execution, timeout=30)
    assert final.state is ExecutionState.SUCCEEDED
    assert final.output == [{"approved": i % 2 == 0, "by": f"r{i}"} for i in range(10)]
    with pytest.raises(IllegalTransition):
        await client.answer_wait(by_index[4], {"approved": True})
    answers = await received(client, execution)
    assert len(answers) == 10 and len({a["wait_id"] for a in answers}) == 10


async def test_an_earlier_attempts_answer_is_refused_and_not_applied_to_the_next(
    client: AsyncClient,
) -> None:
    await client.create_workflow(source=RETRIED)
    execution = await client.start_execution("retried", {})
    [first] = await waits_of(client, execution, 1)
    assert first.attempt == 1 and first.timeout_time is not None
    # The first wait times out; the item waits again, as attempt 2, under another id.
    async with asyncio.timeout(60):
        while True:
            [second] = await waits_of(client, execution, 1)
            if second.attempt == 2:
                break
            await asyncio.sleep(0.02)
    assert second.wait_id != first.wait_id
    with pytest.raises(IllegalTransition) as late:
        await client.answer_wait(first, {"approved": True, "by": "late"})
    assert "attempt" in str(late.value)
    assert [w.wait_id async for w in client.list_waits(execution=execution)] == [second.wait_id]
    await client.answer_wait(second, {"approved": True, "by": "on time"})
    final = await client.wait(execution, timeout=30)
    assert final.output == [{"approved": True, "by": "on time"}]


async def test_an_answer_after_the_wait_ended_is_refused(client: AsyncClient) -> None:
    await client.create_workflow(source=TIMED)
    execution = await client.start_execution("timed", {})
    final = await client.wait(execution, timeout=30)
    assert final.state is ExecutionState.FAILED  # timed out
    # Its id from the node's `node.waiting` event: listing the pending wait first raced its
    # 200 ms timeout on a loaded machine.
    [wait_id] = [
        e.data["wait_id"]
        async for e in client.list_execution_events(execution)
        if e.type == "node.waiting"
    ]
    with pytest.raises(IllegalTransition):
        await client.answer_wait(wait_id, {"late": True})
    nodes = {
        n.node_id: n for n in (await client.get_execution(execution, include_nodes=True)).nodes
    }
    assert nodes["ask"].state is NodeState.FAILED and nodes["ask"].output is None


async def test_signal_execution_still_answers_by_name(client: AsyncClient) -> None:
    await client.create_workflow(source=MAPPED.replace("mapped", "named"))
    execution = await client.start_execution("named", {"docs": ["a", "b"]})
    await waits_of(client, execution, 2)
    # By name, the oldest pending wait takes it (item 0, then item 1); a signal the waiting
    # item's schema refuses is refused, not applied.
    await client.signal_execution(execution, "review", {"approved": "no"})
    await client.signal_execution(execution, "review", {"approved": True, "by": "first"})
    await client.signal_execution(execution, "review", {"approved": False, "by": "second"})
    final = await client.wait(execution, timeout=30)
    assert final.output == [{"approved": True, "by": "first"}, {"approved": False, "by": "second"}]
    refused = [
        e.data async for e in client.list_execution_events(execution) if e.type == "signal.refused"
    ]
    assert len(refused) == 1 and "schema" in refused[0]["reason"]


async def test_bad_requests_name_the_field(client: AsyncClient) -> None:
    for kwargs, field in (
        ({"wait_id": "no-slashes"}, "wait_id"),
        ({"token": "not-a-token"}, "token"),
        ({"wait_id": "0123/ask/0"}, "wait_id"),
        # Digits int() does not take (a superscript two; past its 4300-digit limit).
        ({"wait_id": "0123/ask/\u00b2"}, "wait_id"),
        ({"wait_id": "0123/ask/" + "1" * 5000}, "wait_id"),
        ({"token": base64.urlsafe_b64encode("0123/ask/\u00b2".encode()).decode() + ".n"}, "token"),
    ):
        with pytest.raises(InvalidArgument) as exc:
            await client.answer_wait(data=None, **kwargs)
        assert field in str(exc.value)
    await client.create_workflow(source=TIMED.replace("timed", "reserved").replace("200ms", "60s"))
    execution = await client.start_execution("reserved", {})
    with pytest.raises(InvalidArgument) as exc:  # answers' signal ids are AnswerWait's
        await client.signal_execution(execution, "approve", signal_id="wait:x/y/1")
    assert "signal_id" in str(exc.value)


async def test_waits_and_answers_stay_within_the_tenant(auth_server: Any) -> None:
    from agentrun.client import ExecutionNotFound

    address = f"127.0.0.1:{auth_server.port}"
    async with (
        AsyncClient(address, api_key="key-acme") as acme,
        AsyncClient(address, api_key="key-globex") as globex,
    ):
        await acme.create_workflow(source=TIMED.replace("200ms", "60s"))
        execution = await acme.start_execution("timed", {})
        [wait] = await waits_of(acme, execution, 1)
        token = (await tokens_of(acme, execution))[wait.wait_id]
        assert [w async for w in globex.list_waits()] == []
        for attempt in (
            globex.answer_wait(wait, {"x": 1}),
            globex.answer_wait(token=token, data={"x": 1}),
        ):
            with pytest.raises(ExecutionNotFound):
                await attempt
        await acme.answer_wait(token=token, data={"ok": True})
        assert (await acme.wait(execution, timeout=30)).output == {"ask": {"ok": True}}
