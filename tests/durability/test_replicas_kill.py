"""Three `agentrun serve` replicas on one PostgreSQL; one is killed with SIGKILL every few
seconds and started again. Every execution succeeds, no committed step runs again, none is
lost, no live replica loses a lease, and every kill's orphans are taken over within
lease + one renewal period (lease/3) of the kill, as docs/runtime.md promises.

Half of the restarts wait until the others adopted the orphans; the others are immediate (a
replica restarted under its id takes its own executions back at once, without waiting for the
leases to expire): the bound holds for both, whoever takes the orphans.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from tests.durability.common import (
    TERMINAL,
    Replica,
    check_event_logs,
    children,
    read_leases,
    read_snapshot,
    run_sync,
    serve_all,
    wait_finished,
)
from tests.durability.grpc_util import start_executions
from tests.durability.ledger import Ledger, check, mark, steps_workflow
from tests.durability.pg import PrivatePostgres

STEPS = 20
# Short, so the test is quick; the bound is measured relative to it.
LEASE = 3.0
RENEWAL = LEASE / 3
BOUND = LEASE + RENEWAL
# What a live replica must never log, and what PostgreSQL says when it ends a session that
# sat idle inside a transaction.
LEASE_LOST = re.compile(r"lease on execution \S+ was lost|lease lost to another replica")
IDLE_KILLED = re.compile(r"idle-in-transaction|idle_in_transaction")


def replicas_under_fire(
    workdir: Path, url: str, *, executions: int, kills: int, sleep: float, seed: int
) -> dict[str, object]:
    rng = random.Random(seed)
    ledger = workdir / "ledger.txt"
    replicas = [Replica(workdir, url, name, ledger, lease=LEASE) for name in ("a", "b", "c")]
    takeovers: list[float] = []  # seconds from a kill to each orphan's take-over
    reclaims: list[float] = []  # seconds from an immediate restart to its own orphans' reclaim
    with children() as procs:
        addresses = serve_all(
            procs, replicas, steps_workflow("steps", STEPS, sleep, max_attempts=10)
        )
        ids = run_sync(start_executions(addresses, "steps", executions))
        assert len(set(ids)) == executions
        for k in range(kills):
            time.sleep(rng.uniform(1.0, 2.5))
            victim = rng.choice(replicas)
            victim.kill()
            killed_at = time.time()
            mark(ledger, f"killed {victim.name} generation {victim.generation}")
            rows = read_leases(url)
            # An orphan is taken over when its lease epoch moves on (a peer's claim, or the
            # restarted replica's own) or it ends (it cannot end before a claim: its owner is dead).
            pending = {
                i: epoch
                for i, (owner, epoch, state) in rows.items()
                if owner == victim.name and state not in TERMINAL
            }
            restarted_at = None
            if k % 2:
                procs.append(victim.start())
                restarted_at = time.time()
            while pending:
                rows = read_leases(url)
                now = time.time()  # after the read: a take-over is never counted early
                for i, (owner, epoch, state) in rows.items():
                    if i in pending and (epoch > pending[i] or state in TERMINAL):
                        del pending[i]
                        takeovers.append(now - killed_at)
                        if restarted_at is not None and owner == victim.name:
                            reclaims.append(now - restarted_at)
                assert now - killed_at < BOUND + 30, (
                    f"orphans of {victim.name} not taken over: {sorted(pending)[:5]}"
                )
                time.sleep(0.02)
            if restarted_at is None:
                procs.append(victim.start())
            victim.wait_ready()

        wait_finished(
            url,
            60 + executions * 0.3,
            logs=lambda: {r.name: r.child.log.read_text() for r in replicas},
        )
        for r in replicas:
            r.stop()
    report = final_checks(url, ledger, replicas)
    return {"report": report, "takeovers": takeovers, "reclaims": reclaims}


def final_checks(url: str, ledger: Path, replicas: list[Replica]) -> object:
    """No live replica lost a lease or had a session ended; every execution succeeded; no
    step lost or run again after its commit; event logs whole."""
    logs = {
        r.name: r.child.log.read_text(errors="replace") for r in replicas if r.child is not None
    }
    for name, text in logs.items():
        lost = LEASE_LOST.findall(text)
        assert not lost, f"replica {name}, alive, lost {len(lost)} leases: {lost[:3]}"
        assert not IDLE_KILLED.search(text), f"replica {name}: PostgreSQL ended an idle transaction"
    final = read_snapshot(url, events=True)
    assert all(row["state"] == "SUCCEEDED" for i, row in final.executions.items()), final.states()
    report = check(Ledger.read(ledger), final.outputs(), final.expected_keys(STEPS))
    report.assert_ok()
    check_event_logs(final)
    return report


def _seed() -> int:
    return int(os.environ.get("DURABILITY_SEED", random.randrange(1 << 30)))


def _report(result: dict[str, object]) -> list[float]:
    takeovers: list[float] = result["takeovers"]  # type: ignore[assignment]
    reclaims: list[float] = result["reclaims"]  # type: ignore[assignment]
    print(result["report"].summary())  # type: ignore[attr-defined]
    print(
        f"take-over after kill: worst {max(takeovers, default=0):.2f}s over {len(takeovers)} orphans"
        f" (lease {LEASE}s, renewal every {RENEWAL:.2f}s, bound {BOUND:.2f}s);"
        f" reclaimed by the restarted replica: {len(reclaims)}, worst {max(reclaims, default=0):.2f}s after its start"
    )
    return takeovers


@pytest.mark.timeout(240)
def test_three_replicas_one_killed_every_few_seconds(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    seed = _seed()
    print(f"seed {seed}")
    result = replicas_under_fire(
        tmp_path, private_pg.url, executions=30, kills=4, sleep=1.0, seed=seed
    )
    takeovers = _report(result)
    assert takeovers, "some kill left orphans to take over"
    assert max(takeovers) < BOUND


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_three_replicas_ten_kills_200_executions(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    """The issue's acceptance: 10 random kills under 200 executions x 20 steps."""
    seed = _seed()
    print(f"seed {seed}")
    # Steps of 3 s keep executions running through all ten kills.
    result = replicas_under_fire(
        tmp_path, private_pg.url, executions=200, kills=10, sleep=3.0, seed=seed
    )
    takeovers = _report(result)
    assert takeovers
    assert max(takeovers) < BOUND


@pytest.mark.timeout(180)
def test_a_replica_restarted_under_its_id_takes_its_work_back_at_once(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    """With the default 15 s lease no peer may claim before 15 s: whatever the restart costs on
    this machine (seconds), the restarted replica itself must take its executions back."""
    url, ledger = private_pg.url, tmp_path / "ledger.txt"
    replicas = [Replica(tmp_path, url, name, ledger, lease=15.0) for name in ("a", "b")]
    with children() as procs:
        addresses = serve_all(procs, replicas, steps_workflow("steps", STEPS, 0.5, max_attempts=10))
        run_sync(start_executions(addresses, "steps", 10))
        victim = replicas[0]
        wait_until = time.time() + 30
        while not any(o == "a" and s not in TERMINAL for o, _, s in read_leases(url).values()):
            assert time.time() < wait_until, "replica a runs nothing"
            time.sleep(0.05)
        victim.kill()
        rows = read_leases(url)
        orphans = {
            i: epoch
            for i, (owner, epoch, state) in rows.items()
            if owner == "a" and state not in TERMINAL
        }
        restarted_at = time.time()
        procs.append(victim.start())
        while True:
            now = read_leases(url)
            taken = {i: now[i] for i in orphans if now[i][1] > orphans[i] or now[i][2] in TERMINAL}
            if len(taken) == len(orphans):
                break
            assert time.time() - restarted_at < 60, (
                f"not taken back: {sorted(set(orphans) - set(taken))}"
            )
            time.sleep(0.05)
        reclaimed = time.time() - restarted_at
        assert {owner for owner, _, _ in taken.values()} == {"a"}, taken
        print(
            f"{len(orphans)} executions taken back by the restarted replica {reclaimed:.2f}s after its start"
        )
        victim.wait_ready()
        wait_finished(url, 90, logs=lambda: {r.name: r.child.log.read_text() for r in replicas})
        for r in replicas:
            r.stop()
    final_checks(url, ledger, replicas)
