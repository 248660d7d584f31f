"""kill -9 the process running sagas, at random moments, again and again; after the last
restart every saga is complete and no compensation was applied twice.

Each execution (tests/resilience/saga_driver.py): four steps with `compensate`, one without,
then `charge` fails with `booking.declined`, which a `compensate` handler answers. The
strategy (reverse, sequential, parallel) varies across executions. Half the kills come at a
random moment, half just after an undo began (so that some land mid-compensation, between a
refund and its commit). The tools append `start`/`done` lines with the call's idempotency key
to an fsync'd ledger.

After the final, undisturbed run:

- every execution is COMPENSATED, every compensable step COMPENSATED, its undo SUCCEEDED;
- deduplicated by idempotency key, the ledger shows each undo exactly once, and a repeated
  undo call (a kill between the refund and its commit) carries the same key;
- reverse / sequential: each undo began only after every undo before it (in the strategy's
  order over the steps' committed completion order) was done, and the committed events say
  the same; parallel: all four done;
- no step or undo whose completion was committed before a kill ever began again.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("saga_driver.py")
COMPENSABLE = ("flight", "hotel", "car", "insurance")


@dataclass(frozen=True)
class Line:
    phase: str  # start | done
    kind: str  # do | undo | fail
    execution: str
    node: str
    attempt: int
    key: str


def read_ledger(path: Path) -> list[Line]:
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        words = text.split()
        if len(words) == 6:  # a line cut by the kill is incomplete; none is, with O_APPEND writes
            lines.append(Line(words[0], words[1], words[2], words[3], int(words[4]), words[5]))
    return lines


@dataclass
class Snapshot:
    """What the store held right after a kill."""

    committed_keys: set[str]  # idempotency keys of calls whose completion was committed
    starts: collections.Counter[str]  # `start` lines per key in the ledger at that moment
    compensating: int  # executions caught mid-saga


def snapshot(db: Path, ledger: Path) -> Snapshot:
    committed: set[str] = set()
    compensating = 0
    if db.exists():
        with sqlite3.connect(db) as conn:
            for execution, node, state in conn.execute(
                "select execution_id, node_id, state from nodes"
            ):
                if node.endswith(".compensate"):
                    if state == "SUCCEEDED":
                        committed.add(f"{execution}/{node.removesuffix('.compensate')}/compensate")
                elif state in ("SUCCEEDED", "COMPENSATING", "COMPENSATED"):
                    committed.add(f"{execution}/{node}")
            compensating = conn.execute(
                "select count(*) from executions where state = 'COMPENSATING'"
            ).fetchone()[0]
    starts = collections.Counter(line.key for line in read_ledger(ledger) if line.phase == "start")
    return Snapshot(committed, starts, compensating)


def _driver(db: Path, ledger: Path, count: int, seed: int, stagger: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(db), str(ledger), str(count), str(seed), str(stagger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _undo_starts(ledger: Path) -> int:
    return sum(1 for line in read_ledger(ledger) if line.phase == "start" and line.kind == "undo")


@dataclass
class CrashRun:
    db: Path
    ledger: Path
    snapshots: list[Snapshot] = field(default_factory=list)
    kills: int = 0


def crash_loop(
    tmp_path: Path, *, executions: int, kills: int, seed: int, stagger: float
) -> CrashRun:
    rng = random.Random(seed)
    run = CrashRun(tmp_path / "agentrun.db", tmp_path / "ledger.txt")
    for k in range(kills):
        proc = _driver(run.db, run.ledger, executions, seed, stagger)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "the driver did not start"
            if k % 2 == 0:
                time.sleep(rng.uniform(0.15, 1.0))  # anywhere
            else:
                # Just after an undo began: mid-compensation, maybe between refund and commit.
                seen = _undo_starts(run.ledger)
                deadline = time.monotonic() + 5
                while (
                    _undo_starts(run.ledger) == seen
                    and time.monotonic() < deadline
                    and proc.poll() is None
                ):
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is not None:
                break  # everything finished before this kill
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            run.kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        run.snapshots.append(snapshot(run.db, run.ledger))
    # The last restart, left alone to the end.
    final = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            str(run.db),
            str(run.ledger),
            str(executions),
            str(seed),
            str(stagger),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert final.returncode == 0 and "finished" in final.stdout, final.stderr[-3000:]
    return run


def check(run: CrashRun, executions: int) -> dict[str, int]:
    with sqlite3.connect(run.db) as conn:
        rows = conn.execute("select id, workflow, state from executions").fetchall()
        nodes = {
            (e, n): (s, order)
            for e, n, s, order in conn.execute(
                "select execution_id, node_id, state, completed_order from nodes"
            )
        }
        events = collections.defaultdict(list)
        for e, seq, type_, node in conn.execute(
            "select execution_id, sequence, type, node_id from events order by execution_id, sequence"
        ):
            events[e].append((seq, type_, node))
    assert len(rows) == executions
    states = collections.Counter(state for _, _, state in rows)
    assert states == {"COMPENSATED": executions}, states
    strategies = collections.Counter(workflow for _, workflow, _ in rows)
    assert len(strategies) == 3, strategies

    ledger = read_ledger(run.ledger)
    problems: list[str] = []
    repeats = restarted = 0
    for execution, workflow, _ in rows:
        strategy = workflow.removeprefix("saga-")
        # The store: every compensable step undone, charge failed.
        for node in COMPENSABLE:
            if nodes.get((execution, node), ("",))[0] != "COMPENSATED":
                problems.append(f"{execution}: {node} is {nodes.get((execution, node))}")
            if nodes.get((execution, f"{node}.compensate"), ("",))[0] != "SUCCEEDED":
                problems.append(
                    f"{execution}: {node}.compensate is {nodes.get((execution, f'{node}.compensate'))}"
                )
        if nodes.get((execution, "charge"), ("",))[0] != "FAILED":
            problems.append(f"{execution}: charge is {nodes.get((execution, 'charge'))}")
        if not events[execution] or events[execution][-1][1] != "execution.compensated":
            problems.append(f"{execution}: last event {events[execution][-1:]}")

        # The ledger: one undo per key; a repeat carries the same key.
        undo = [line for line in ledger if line.execution == execution and line.kind == "undo"]
        by_node: dict[str, set[str]] = collections.defaultdict(set)
        for line in undo:
            by_node[line.node].add(line.key)
        for node in COMPENSABLE:
            if by_node.get(node) != {f"{execution}/{node}/compensate"}:
                problems.append(f"{execution}: undo of {node} ran with keys {by_node.get(node)}")
        done = [line for line in undo if line.phase == "done"]
        unique = list(dict.fromkeys(line.key for line in done))
        repeats += len(done) - len(unique)
        started = collections.Counter(line.key for line in undo if line.phase == "start")
        restarted += sum(n - 1 for n in started.values())
        if sorted(unique) != sorted(f"{execution}/{n}/compensate" for n in COMPENSABLE):
            problems.append(f"{execution}: undone (deduplicated) {unique}")

        # The order: over the committed completion order of the forward steps.
        completed = sorted(COMPENSABLE, key=lambda n: nodes.get((execution, n), ("", 0))[1])
        expected = {"reverse": completed[::-1], "sequential": completed}.get(strategy)
        if expected is not None:
            finished: set[str] = set()
            for line in undo:
                if line.phase == "done":
                    finished.add(line.node)
                    continue
                before = expected[: expected.index(line.node)]
                if not set(before) <= finished:
                    problems.append(
                        f"{execution} ({strategy}): undo of {line.node} began before "
                        f"{sorted(set(before) - finished)} were undone; expected order {expected}"
                    )
            logged = [
                node.removesuffix(".compensate")
                for _, type_, node in events[execution]
                if type_ == "node.succeeded" and node and node.endswith(".compensate")
            ]
            if logged != expected:
                problems.append(
                    f"{execution} ({strategy}): events undo {logged}, expected {expected}"
                )

    # Committed before a kill: never begun again.
    final_starts = collections.Counter(line.key for line in ledger if line.phase == "start")
    for number, snap in enumerate(run.snapshots, 1):
        for key in snap.committed_keys:
            if final_starts[key] != snap.starts[key]:
                problems.append(
                    f"after kill {number}: {key} was committed with {snap.starts[key]} calls, "
                    f"then began again ({final_starts[key]} in all)"
                )
    # A repeat needs a kill between an undo's side effect and its commit: one per kill at most.
    done_per_key = collections.Counter(
        line.key for line in ledger if line.phase == "done" and line.kind == "undo"
    )
    problems += [
        f"{key} applied {n} times in {run.kills} kills"
        for key, n in done_per_key.items()
        if n > run.kills + 1
    ]
    assert not problems, "\n".join(problems[:40])
    return {
        "kills": run.kills,
        "undo_calls_repeated_after_their_effect": repeats,
        "undo_calls_begun_again": restarted,
        "kills_mid_compensation": sum(1 for s in run.snapshots if s.compensating),
    }


def _seed() -> int:
    return int(os.environ.get("SAGA_CRASH_SEED") or random.randrange(2**31))


@pytest.mark.timeout(120)
def test_kill_9_during_sagas(tmp_path: Path) -> None:
    seed = _seed()
    run = crash_loop(tmp_path, executions=12, kills=4, seed=seed, stagger=0.12)
    stats = check(run, 12)
    print(f"SAGA_CRASH_SEED={seed}", stats)
    assert stats["kills"] >= 2, (seed, stats)
    assert stats["kills_mid_compensation"] >= 1, (seed, stats)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_sagas_ten_times_fifty_executions(tmp_path: Path) -> None:
    seed = _seed()
    run = crash_loop(tmp_path, executions=50, kills=10, seed=seed, stagger=0.1)
    stats = check(run, 50)
    print(f"SAGA_CRASH_SEED={seed}", stats)
    assert stats["kills"] >= 8, (seed, stats)
    assert stats["kills_mid_compensation"] >= 3, (seed, stats)
