"""A zombie replica: SIGSTOP it while its steps run, past its lease, let the others take its
executions over, then SIGCONT it. Its steps finish and it tries to commit them: not one of
those writes is accepted (fencing by lease epoch), and the executions finish with the new
owners' results.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.durability.common import (
    TERMINAL,
    Replica,
    check_event_logs,
    children,
    pg_activity,
    read_snapshot,
    run_sync,
    wait_finished,
    wait_until,
)
from tests.durability.grpc_util import create_workflow, start_executions
from tests.durability.ledger import Ledger, check, mark, steps_workflow
from tests.durability.pg import PrivatePostgres

LEASE = 1.5
STEPS = 4


def zombie_rounds(
    workdir: Path, url: str, *, rounds: int, per_round: int, seed: int
) -> dict[str, object]:
    rng = random.Random(seed)
    ledger_path = workdir / "ledger.txt"
    replicas = [Replica(workdir, url, name, ledger_path, lease=LEASE) for name in ("a", "b", "c")]
    takeovers: list[float] = []
    # (replica, stop mark, cont mark, the executions taken from it)
    victims: list[tuple[str, str, str, frozenset[str]]] = []
    with children() as procs:
        for r in replicas:
            procs.append(r.start())
        for r in replicas:
            r.wait_ready()
        run_sync(create_workflow([r.address for r in replicas], steps_workflow("slow", STEPS, 0.8)))
        for n in range(rounds):
            zombie = replicas[n % len(replicas)]
            others = [r for r in replicas if r is not zombie]
            ids = run_sync(
                start_executions([zombie.address], "slow", per_round, prefix=f"round{n}")
            )

            def in_flight(ids: list[str] = ids, name: str = zombie.name) -> bool:
                led = Ledger.read(ledger_path)
                return set(ids) <= {
                    e.key.split("/")[0]
                    for e in led.entries
                    if e.kind == "start" and e.replica == name
                }

            wait_until(in_flight, 30, f"steps of round {n} running on {zombie.name}")
            time.sleep(rng.uniform(0.0, 1.2))  # somewhere inside a step, or between two
            zombie.child.signal(signal.SIGSTOP)
            stopped_at = time.time()
            stop_mark = f"sigstop {zombie.name} round {n}"
            mark(ledger_path, stop_mark)
            snap = read_snapshot(url)
            orphans = {i for i in ids if snap.executions[i]["state"] not in TERMINAL}
            pending = set(orphans)
            while pending:
                now = read_snapshot(url)
                for i in list(pending):
                    if (
                        now.executions[i]["owner"] != zombie.name
                        or now.executions[i]["state"] in TERMINAL
                    ):
                        pending.discard(i)
                        takeovers.append(time.time() - stopped_at)
                if pending and time.time() - stopped_at > LEASE + 8:
                    # (A zombie frozen inside a transaction would hold its rows' locks: the
                    # session list shows it 'idle in transaction'.)
                    raise AssertionError(
                        f"{zombie.name}'s executions were not taken over: {sorted(pending)}\n{pg_activity(url)}"
                    )
                time.sleep(0.05)
            time.sleep(0.5)  # the new owners start the interrupted steps again
            cont_mark = f"sigcont {zombie.name} round {n}"
            mark(ledger_path, cont_mark)
            zombie.child.signal(signal.SIGCONT)
            victims.append((zombie.name, stop_mark, cont_mark, frozenset(orphans)))
            assert orphans, "the zombie held unfinished executions when it stopped"
            time.sleep(1.0)
            assert zombie.child.alive, f"the zombie died after SIGCONT:\n{zombie.child.tail()}"
            assert all(o.child.alive for o in others)

        wait_finished(url, 60, logs=lambda: {r.name: r.child.log.read_text() for r in replicas})
        logs = {r.name: r.child.log.read_text(errors="replace") for r in replicas}
        for r in replicas:
            r.stop()

    final = read_snapshot(url, events=True)
    ledger = Ledger.read(ledger_path)
    assert len(final.executions) == rounds * per_round
    assert all(row["state"] == "SUCCEEDED" for i, row in final.executions.items()), final.states()
    outputs = final.outputs()
    report = check(ledger, outputs, final.expected_keys(STEPS))
    report.assert_ok()
    check_event_logs(final)

    committed_tokens = {o["token"] for o in outputs.values()}
    event_tokens = {
        (e["data"] or {}).get("output", {}).get("token")
        for e in final.events
        if e["type"] == "node.succeeded" and isinstance((e["data"] or {}).get("output"), dict)
    }
    stale_calls = 0
    done_at = {e.token: e.index for e in ledger.entries if e.kind == "done"}
    for n, (name, stop_mark, cont_mark, taken) in enumerate(victims):
        stop_at, cont_at = ledger.marks[stop_mark], ledger.marks[cont_mark]
        # Until the next round (when another replica is stopped and the work moves again), the
        # results in executions taken from the zombie are the new owners': none of the zombie's
        # was finished after it was stopped.
        round_end = ledger.marks[victims[n + 1][1]] if n + 1 < len(victims) else len(ledger.entries)
        for (execution_id, node_id), node in final.nodes.items():
            out = node["output"] or {}
            if execution_id in taken and out.get("replica") == name:
                assert not stop_at <= done_at[out["token"]] < round_end, (
                    f"{execution_id}/{node_id}: a stale result of {name}"
                )
        # Calls of the zombie that had not finished when it was stopped: they finish after
        # SIGCONT, too late, and none of their results may be committed.
        unfinished = {
            e.token for e in ledger.entries[:stop_at] if e.kind == "start" and e.replica == name
        }
        unfinished -= {e.token for e in ledger.entries[:stop_at] if e.kind == "done"}
        late = {
            e.token
            for e in ledger.entries[cont_at:round_end]
            if e.kind == "done" and e.replica == name
        }
        stale_calls += len(unfinished & late)
        accepted = unfinished & (committed_tokens | event_tokens)
        assert not accepted, f"{len(accepted)} results of the stale {name} were committed"
    zombie_warnings = sum(logs[name].count("lease") for name, *_ in victims)
    return {
        "report": report,
        "takeovers": takeovers,
        "stale_calls": stale_calls,
        "zombie_lease_warnings": zombie_warnings,
    }


def test_zombie_replica_writes_nothing_after_take_over(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    result = zombie_rounds(
        tmp_path, private_pg.url, rounds=1, per_round=12, seed=random.randrange(1 << 30)
    )
    print(result["report"].summary())
    print(
        f"take-over of the stopped replica: max {max(result['takeovers']):.2f}s;"
        f" stale calls that finished after SIGCONT: {result['stale_calls']};"
        f" lease warnings in its log: {result['zombie_lease_warnings']}"
    )
    # The stale replica really finished calls after SIGCONT and noticed it lost its leases.
    assert result["stale_calls"] > 0 or result["zombie_lease_warnings"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_zombie_replicas_three_rounds(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    result = zombie_rounds(
        tmp_path, private_pg.url, rounds=3, per_round=30, seed=random.randrange(1 << 30)
    )
    print(result["report"].summary(), result["stale_calls"], result["zombie_lease_warnings"])
    assert result["zombie_lease_warnings"] > 0
