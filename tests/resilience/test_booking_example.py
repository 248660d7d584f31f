"""examples/booking_saga.yaml: the charge is declined, the reservations are undone in reverse.

Run as a user would (`agentrun run --json --memory`, with live progress: one line per event),
and once more in-process to read the stored event log."""

from __future__ import annotations

import json
from pathlib import Path

from agentrun.cli import main
from agentrun.engine import Engine, load_workflow
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "booking_saga.yaml"
INPUT = {"trip": "T-42", "amount": 1250}


def test_booking_saga_via_cli(monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    code = main(
        [
            "run",
            str(EXAMPLE),
            "--input",
            json.dumps(INPUT),
            "--json",
            "--memory",
            "--progress",
            "always",
        ]
    )
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert code == 1, (body, err)  # it did not succeed: it was undone
    assert body["execution"]["state"] == "STATE_COMPENSATED"
    nodes = _nodes(body)
    assert nodes["reserve_flight"]["state"] == "STATE_COMPENSATED"
    assert nodes["reserve_hotel"]["state"] == "STATE_COMPENSATED"
    assert nodes["charge_card"]["state"] == "STATE_FAILED"
    assert nodes["charge_card"]["attempt"] == 1  # payments.declined is non-retryable
    assert "confirm" not in nodes or nodes["confirm"]["state"] in (
        "STATE_PENDING",
        "STATE_CANCELLED",
        "STATE_SKIPPED",
    )
    assert "charge_card.compensate" not in nodes  # never charged, never refunded
    assert nodes["reserve_hotel.compensate"]["output"] == {"cancelled_hotel": "HT-T-42"}
    assert nodes["reserve_flight.compensate"]["output"] == {"cancelled_flight": "FL-T-42"}
    error = body["execution"]["error"]
    assert error["type"] == "payments.declined" and error["node_id"] == "charge_card"
    assert error["details"]["compensated"] == ["reserve_hotel", "reserve_flight"]
    assert error["details"]["not_compensated"] == []

    # The live event lines (`--progress always`): the hotel's undo runs and ends before the
    # flight's starts.
    lines = [line.split() for line in err.splitlines() if len(line.split()) >= 3]
    undo = [(words[1], words[2]) for words in lines if words[1].endswith(".compensate")]
    assert undo == [
        ("reserve_hotel.compensate", "running"),
        ("reserve_hotel.compensate", "succeeded"),
        ("reserve_flight.compensate", "running"),
        ("reserve_flight.compensate", "succeeded"),
    ], err
    assert [w[2] for w in lines if w[1] == "execution"][-2:] == ["compensating", "compensated"]


async def test_booking_saga_event_log() -> None:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        spec = load_workflow(EXAMPLE.read_text(), filename=str(EXAMPLE))
        await engine.create_workflow(spec)
        ex = await engine.start_execution(spec.name, INPUT)
        final = await engine.wait(ex.id, timeout=10)
        assert final.state is ExecutionState.COMPENSATED
        events = await engine.list_events(ex.id)
    finally:
        await engine.stop(grace=0)
    seq = [(e.type, e.node_id) for e in events]
    compensating = seq.index(("execution.compensating", None))
    # Nothing forward runs after the saga began.
    assert not [
        s for s in seq[compensating:] if s[0] == "node.running" and not s[1].endswith(".compensate")
    ]
    saga = [s for s in seq[compensating:] if s[1] is not None]
    assert saga == [
        ("node.compensating", "reserve_hotel"),
        ("node.running", "reserve_hotel.compensate"),
        ("node.succeeded", "reserve_hotel.compensate"),
        ("node.compensated", "reserve_hotel"),
        ("node.compensating", "reserve_flight"),
        ("node.running", "reserve_flight.compensate"),
        ("node.succeeded", "reserve_flight.compensate"),
        ("node.compensated", "reserve_flight"),
    ]
    assert seq[-1] == ("execution.compensated", None)
    # Reverse of completion order.
    done = [n for t, n in seq if t == "node.succeeded" and n in ("reserve_flight", "reserve_hotel")]
    assert done == ["reserve_flight", "reserve_hotel"]


def _nodes(body: dict) -> dict[str, dict]:
    """`run --json` lists the nodes in the workflow's order; by node id here."""
    return {node["node_id"]: node for node in body["nodes"]}
