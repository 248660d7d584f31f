"""Three `agentrun serve` replicas on one PostgreSQL; one is killed with SIGKILL every few
seconds and started again. Every execution succeeds, no committed step runs again, none is
lost, and a dead replica's executions are taken over within lease + heartbeat.

Half of the restarts wait until the others adopted the orphans (take-over is measured);
the others are immediate (a replica restarted under its id takes its own executions back at
once, without waiting for the leases to expire).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.durability.common import (
    TERMINAL,
    Replica,
    check_event_logs,
    children,
    read_snapshot,
    run_sync,
    wait_finished,
)
from tests.durability.grpc_util import create_workflow, start_executions
from tests.durability.ledger import Ledger, check, mark, steps_workflow
from tests.durability.pg import PrivatePostgres

STEPS = 20
LEASE = 1.5
HEARTBEAT = LEASE / 3
# Slack over lease + heartbeat for two busy cores (claim query, resume, polling here).
SLACK = 2.5


def replicas_under_fire(
    workdir: Path, url: str, *, executions: int, kills: int, sleep: float, seed: int
) -> dict[str, object]:
    rng = random.Random(seed)
    ledger = workdir / "ledger.txt"
    replicas = [Replica(workdir, url, name, ledger, lease=LEASE) for name in ("a", "b", "c")]
    takeovers: list[float] = []
    with children() as procs:
        for r in replicas:
            procs.append(r.start())
        for r in replicas:
            r.wait_ready()
        addresses = [r.address for r in replicas]
        run_sync(create_workflow(addresses, steps_workflow("steps", STEPS, sleep)))
        ids = run_sync(start_executions(addresses, "steps", executions))
        assert len(set(ids)) == executions
        for k in range(kills):
            time.sleep(rng.uniform(1.0, 2.5))
            victim = rng.choice(replicas)
            victim.kill()
            killed_at = time.time()
            mark(ledger, f"killed {victim.name} generation {victim.generation}")
            snap = read_snapshot(url)
            orphans = {
                i for i, row in snap.executions.items() if row["owner"] == victim.name and row["state"] not in TERMINAL
            }
            if k % 2 == 0 and orphans:
                # Measure take-over: each orphan leased to another replica (or finished).
                pending = set(orphans)
                while pending:
                    now = read_snapshot(url)
                    for i in list(pending):
                        row = now.executions[i]
                        if row["owner"] != victim.name or row["state"] in TERMINAL:
                            pending.discard(i)
                            takeovers.append(time.time() - killed_at)
                    assert time.time() - killed_at < LEASE + HEARTBEAT + 15, (
                        f"orphans of {victim.name} not taken over: {sorted(pending)[:5]}"
                    )
                    time.sleep(0.05)
            procs.append(victim.start())
            victim.wait_ready()

        wait_finished(url, 60 + executions * 0.3, logs=lambda: {r.name: r.child.log.read_text() for r in replicas})
        for r in replicas:
            r.stop()
    final = read_snapshot(url, events=True)
    assert all(row["state"] == "SUCCEEDED" for i, row in final.executions.items()), final.states()
    report = check(Ledger.read(ledger), final.outputs(), final.expected_keys(STEPS))
    report.assert_ok()
    check_event_logs(final)
    return {"report": report, "takeovers": takeovers}


def _seed() -> int:
    return int(os.environ.get("DURABILITY_SEED", random.randrange(1 << 30)))


@pytest.mark.timeout(150)
def test_three_replicas_one_killed_every_few_seconds(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    seed = _seed()
    print(f"seed {seed}")
    result = replicas_under_fire(tmp_path, private_pg.url, executions=30, kills=3, sleep=0.3, seed=seed)
    takeovers = result["takeovers"]
    print(result["report"].summary())
    print(f"take-over after kill: max {max(takeovers, default=0):.2f}s over {len(takeovers)} orphans"
          f" (lease {LEASE}s, heartbeat {HEARTBEAT:.2f}s)")
    assert takeovers, "some kill left orphans to take over"
    assert max(takeovers) < LEASE + HEARTBEAT + SLACK


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_replicas_many_kills_200_executions(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    seed = _seed()
    print(f"seed {seed}")
    result = replicas_under_fire(tmp_path, private_pg.url, executions=200, kills=12, sleep=0.4, seed=seed)
    takeovers = result["takeovers"]
    print(result["report"].summary())
    print(f"take-over after kill: max {max(takeovers, default=0):.2f}s over {len(takeovers)} orphans")
    assert takeovers
    assert max(takeovers) < LEASE + HEARTBEAT + SLACK
