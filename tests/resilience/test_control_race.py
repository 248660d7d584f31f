"""500 random pause/resume/cancel calls, from concurrent callers, against 50 running executions.

Checked afterwards, from the event log and from the start times the tools record:

- after an acknowledged pause no node starts until the next `execution.running` (in the log:
  no `node.running` between `execution.paused` and the next `execution.running`; in time: a
  tool that begins after the pause was acknowledged, with no resume asked in between, belongs
  to a node whose `node.running` was logged before the pause);
- after an acknowledged cancel no node starts (only compensations, with `compensate`);
- an illegal call raises IllegalTransition naming a state in which that call is indeed illegal,
  and changes nothing: the log stays gapless, one final event, ends in a legal final state
  once every paused execution is resumed.

Half the executions end in a `wait` for a signal sent only after the storm: however fast or
slow the machine, they are still running or waiting while the calls arrive, so the storm
always finds both legal and illegal calls to make (the other half race their own end).

Set RACE_SEED to replay a run.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, IllegalTransition, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState, NodeState

pytestmark = pytest.mark.timeout(120)

EXECUTIONS = 50
CALLS = 500
CALLERS = 20

WORKFLOW = """
name: race
compensation: {strategy: reverse}
nodes:
  - id: s1
    tool: {name: race.step, args: {sleep: 0.02}}
    compensate: {tool: {name: race.undo, args: {sleep: 0.005}}}
  - id: s2
    needs: [s1]
    retry: {max_attempts: 3, backoff: fixed, initial_interval: 15ms}
    tool: {name: race.step, args: {sleep: 0.01, fail_first: true}}
  - id: p1
    needs: [s2]
    tool: {name: race.step, args: {sleep: 0.03}}
    compensate: {tool: {name: race.undo, args: {sleep: 0.005}}}
  - {id: p2, needs: [s2], tool: {name: race.step, args: {sleep: 0.02}}}
  - {id: p3, needs: [s2], tool: {name: race.step, args: {sleep: 0.04}}}
  - {id: cool, needs: [p1, p2, p3], wait: {duration: 30ms}}
  - id: s5
    needs: [cool]
    tool: {name: race.step, args: {sleep: 0.02}}
    compensate: {tool: {name: race.undo, args: {sleep: 0.005}}}
  - {id: s6, needs: [s5], tool: {name: race.step, args: {sleep: 0.03}}}
  - {id: s7, needs: [s6], tool: {name: race.step, args: {sleep: 0.02}}}
  - {id: gate, needs: [s7], when: "${{ input.gated }}", wait: {signal: open}}
"""
TOOL_NODES = {"s1", "s2", "p1", "p2", "p3", "s5", "s6", "s7"}
COMPENSABLE = {"s1", "p1", "s5"}
# A pause or resume handled in the same turn as a cancel(compensate) must leave a compensating
# execution alone (regression: test_engine_regressions.py,
# test_pause_or_resume_racing_a_compensating_cancel_leaves_the_saga_alone).
STRICT_SAGA_CONTROL = True
FINAL_EVENTS = {f"execution.{s.value.lower()}" for s in ExecutionState if s.terminal}


@dataclass(frozen=True)
class Start:
    execution_id: str
    node_id: str
    attempt: int
    key: str
    at: float
    undo: bool


class Step(Tool):
    """Sleeps a little; records when each call began (before sleeping)."""

    effect = Effect.COMPENSABLE

    def __init__(self, name: str, starts: list[Start]) -> None:
        self.name = name
        self.starts = starts

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.starts.append(
            Start(
                ctx.execution_id,
                ctx.node_id,
                ctx.attempt,
                ctx.idempotency_key,
                time.monotonic(),
                self.name == "race.undo",
            )
        )
        await asyncio.sleep(args.get("sleep", 0))
        if args.get("fail_first") and ctx.attempt == 1:
            raise ToolFailure("tool_error", "first attempt fails")
        return {"node": ctx.node_id}


@dataclass
class Call:
    execution_id: str
    action: str  # pause | resume | cancel | cancel+compensate
    issued: float
    returned: float = 0.0
    outcome: str = ""  # ok | illegal
    state: str = ""  # the state returned, or the current_state of the refusal


@dataclass
class Storm:
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _open(kind: str, tmp_path: Path) -> Any:
    if kind == "memory":
        return MemoryStore()
    from agentrun.storage.sql import SqlStore

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'race.db'}")
    await store.open()
    return store


# Where each call is legal (PENDING counts: pause is allowed there, resume is not).
LEGAL = {
    "pause": {"PENDING", "RUNNING", "WAITING"},
    "resume": {"PAUSED"},
    "cancel": {s.value for s in ExecutionState if not s.terminal},
    "cancel+compensate": {s.value for s in ExecutionState if not s.terminal},
}


async def _caller(
    engine: Engine, ids: list[str], calls: int, rng: random.Random, storm: Storm
) -> None:
    for _ in range(calls):
        await asyncio.sleep(rng.uniform(0, 0.02))
        execution_id = rng.choice(ids)
        action = rng.choices(
            ["pause", "resume", "cancel", "cancel+compensate"], weights=[46, 46, 4, 4]
        )[0]
        call = Call(execution_id, action, time.monotonic())
        storm.calls.append(call)
        try:
            if action == "pause":
                record = await engine.pause(execution_id)
            elif action == "resume":
                record = await engine.resume(execution_id)
            else:
                record = await engine.cancel(execution_id, compensate=action == "cancel+compensate")
        except IllegalTransition as exc:
            call.returned = time.monotonic()
            call.outcome, call.state = "illegal", exc.current_state
            if exc.current_state in LEGAL[action]:
                storm.errors.append(
                    f"{action} {execution_id} refused in {exc.current_state}: {exc.message}"
                )
            continue
        except Exception as exc:
            call.returned = time.monotonic()
            call.outcome = "error"
            storm.errors.append(f"{action} {execution_id} raised {exc!r}")
            continue
        call.returned = time.monotonic()
        call.outcome, call.state = "ok", record.state.value


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_random_control_calls_against_running_executions(
    store_kind: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("RACE_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    where = f"(RACE_SEED={seed}, {store_kind})"
    starts: list[Start] = []
    store = await _open(store_kind, tmp_path)
    engine = Engine(
        store,
        tools=Registry([*core_tools(), Step("race.step", starts), Step("race.undo", starts)]),
        agents=default_agents(),
        config=EngineConfig(seed=seed),
    )
    await engine.start()
    storm = Storm()
    try:
        await engine.create_workflow(load_workflow(WORKFLOW))
        ids = [
            (await engine.start_execution("race", {"gated": i % 2 == 0})).id
            for i in range(EXECUTIONS)
        ]
        gated = set(ids[::2])
        per_caller = CALLS // CALLERS
        await asyncio.gather(
            *(
                _caller(engine, ids, per_caller, random.Random(rng.random()), storm)
                for _ in range(CALLERS)
            )
        )
        assert len(storm.calls) == CALLS
        storm_calls = collections.Counter((c.action, c.outcome) for c in storm.calls)
        assert not storm.errors, f"{where}: " + "\n".join(storm.errors[:20])

        # Everything paused is resumed; then every execution reaches a final state.
        for execution_id in ids:
            record = await engine.get_execution(execution_id)
            if record.state is ExecutionState.PAUSED:
                call = Call(execution_id, "resume", time.monotonic(), outcome="ok")
                call.state = (await engine.resume(execution_id)).state.value
                call.returned = time.monotonic()
                storm.calls.append(call)
        for execution_id in gated:
            try:
                await engine.signal(execution_id, "open")
            except IllegalTransition as exc:  # cancelled during the storm
                assert ExecutionState(exc.current_state).terminal, (
                    where,
                    execution_id,
                    exc.message,
                )
        finals = {x: await engine.wait(x, timeout=60) for x in ids}
        events = {x: await engine.list_events(x, limit=100_000) for x in ids}
        nodes = {x: {n.node_id: n for n in await engine.get_nodes(x)} for x in ids}
    finally:
        await engine.stop(grace=0)
        await store.close() if hasattr(store, "close") else None

    outcomes = storm_calls
    # The storm did exercise both sides, on the gated executions (which cannot finish during
    # it, whatever the machine's speed): calls acknowledged and calls refused.
    on_gated = collections.Counter(
        (c.action, c.outcome) for c in storm.calls[:CALLS] if c.execution_id in gated
    )
    assert on_gated[("pause", "ok")] >= 10 and on_gated[("resume", "ok")] >= 10, (where, on_gated)
    assert on_gated[("pause", "illegal")] + on_gated[("resume", "illegal")] >= 10, (where, on_gated)

    states = collections.Counter(f.state.value for f in finals.values())
    assert set(states) <= {"SUCCEEDED", "CANCELLED", "COMPENSATED"}, (where, states)

    starts_by_exec: dict[str, list[Start]] = collections.defaultdict(list)
    for s in starts:
        starts_by_exec[s.execution_id].append(s)
    calls_by_exec: dict[str, list[Call]] = collections.defaultdict(list)
    for c in storm.calls:
        calls_by_exec[c.execution_id].append(c)

    problems: list[str] = []
    for x in ids:
        problems += _check_log(x, events[x])
        problems += _check_times(x, events[x], calls_by_exec[x], starts_by_exec[x])
        problems += _check_end(x, finals[x], nodes[x], starts_by_exec[x])
    assert not problems, f"{where} {outcomes}:\n" + "\n".join(problems[:30])


def _check_log(x: str, events: list[Any]) -> list[str]:
    """Gapless; no node starts while paused or after a cancel; one final event, last."""
    out = []
    if [e.sequence for e in events] != list(range(1, len(events) + 1)):
        out.append(f"{x}: sequences have gaps or repeats")
    paused = ended = compensating = False
    finals = 0
    for e in events:
        if ended:
            out.append(f"{x}: #{e.sequence} {e.type} {e.node_id} after the final event")
        if e.type in ("execution.paused", "execution.running") and compensating:
            flipped = f"{x}: #{e.sequence} {e.type} after compensation began"
            if STRICT_SAGA_CONTROL:
                out.append(flipped)
            else:
                warnings.warn(flipped, stacklevel=1)
            continue
        if e.type == "execution.paused":
            paused = True
        elif e.type == "execution.running":
            paused = False
        elif e.type == "execution.compensating":
            compensating, paused = True, False
        elif e.type in FINAL_EVENTS:
            finals += 1
            ended = True
        elif e.type == "node.running":
            undo = e.node_id.endswith(".compensate")
            if paused and not undo:
                out.append(f"{x}: #{e.sequence} node.running {e.node_id} while paused")
            if compensating and not undo:
                out.append(f"{x}: #{e.sequence} node.running {e.node_id} after compensation began")
    if finals != 1:
        out.append(f"{x}: {finals} final events")
    return out


def _check_times(x: str, events: list[Any], calls: list[Call], starts: list[Start]) -> list[str]:
    """A tool that began after an acknowledged pause (with no resume asked since) or after an
    acknowledged cancel belongs to a node that the log shows started before it (or to an undo)."""
    out = []
    running_seq = {
        (e.node_id, (e.data or {}).get("attempt")): e.sequence
        for e in events
        if e.type == "node.running"
    }
    paused_seqs = [e.sequence for e in events if e.type == "execution.paused"]
    stop_seq = next(
        (e.sequence for e in events if e.type in ("execution.cancelled", "execution.compensating")),
        None,
    )
    acked_pauses = [c for c in calls if c.action == "pause" and c.outcome == "ok"]
    # Acknowledged resumes, as (asked, answered): one answered after a pause was asked may
    # have been applied after it, even if asked before it was answered.
    resumes = [(c.issued, c.returned) for c in calls if c.action == "resume" and c.outcome == "ok"]
    acked_cancels = [c for c in calls if c.action.startswith("cancel") and c.outcome == "ok"]
    for s in starts:
        if s.undo:
            continue
        seq = running_seq.get((s.node_id, s.attempt))
        if seq is None:
            out.append(f"{x}: {s.node_id} attempt {s.attempt} ran with no node.running event")
            continue
        for c in acked_cancels:
            if s.at > c.returned and (stop_seq is None or seq > stop_seq):
                out.append(
                    f"{x}: {s.node_id} started {s.at - c.returned:.4f}s after a cancel was acknowledged"
                )
        for c in acked_pauses:
            if s.at <= c.returned or any(
                answered > c.issued and asked < s.at for asked, answered in resumes
            ):
                continue
            # Started in the log before the pause (its call began just after the ack)?
            before = [p for p in paused_seqs if p > seq]
            if not before:
                out.append(
                    f"{x}: {s.node_id} attempt {s.attempt} (#{seq}) started "
                    f"{s.at - c.returned:.4f}s after a pause was acknowledged, no resume asked"
                )
    return out


def _check_end(x: str, final: Any, nodes: dict[str, Any], starts: list[Start]) -> list[str]:
    out = []
    state = final.state
    ran = collections.Counter(s.node_id for s in starts if not s.undo)
    undone = collections.Counter(s.key for s in starts if s.undo)
    for node_id, rec in nodes.items():
        if rec.state in (NodeState.RUNNING, NodeState.READY, NodeState.RETRYING, NodeState.WAITING):
            out.append(f"{x}: {state.value} but {node_id} is left {rec.state.value}")
        if node_id in TOOL_NODES and ran[node_id] > rec.attempt:
            out.append(f"{x}: {node_id} ran {ran[node_id]} times in {rec.attempt} attempts")
    if state is ExecutionState.SUCCEEDED:
        bad = {
            n: r.state.value
            for n, r in nodes.items()
            if n in TOOL_NODES and r.state is not NodeState.SUCCEEDED
        }
        if bad or set(TOOL_NODES) - set(nodes):
            out.append(f"{x}: SUCCEEDED with nodes {bad or sorted(set(TOOL_NODES) - set(nodes))}")
    if state is ExecutionState.COMPENSATED:
        for node_id in COMPENSABLE:
            rec = nodes.get(node_id)
            if rec is None:
                continue
            if rec.state is NodeState.SUCCEEDED:
                out.append(f"{x}: COMPENSATED but {node_id} SUCCEEDED and was not undone")
            if rec.state is NodeState.COMPENSATED and undone[f"{x}/{node_id}/compensate"] != 1:
                out.append(f"{x}: {node_id} undone {undone[f'{x}/{node_id}/compensate']} times")
    if state is not ExecutionState.COMPENSATED and undone:
        out.append(f"{x}: {state.value} yet undo ran: {dict(undone)}")
    return out
