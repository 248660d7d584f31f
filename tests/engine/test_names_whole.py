"""Names are checked whole: a pattern ending in `$` also matches before a final newline, so
`a\n` passed as a node id, a label key, a state or an event name, and was stored as such."""

from __future__ import annotations

import json

import pytest

from agentrun.engine import InvalidWorkflow, load_workflow
from agentrun.engine.labels import label_problems
from tests.engine.conftest import Harness

DAG = {"name": "whole", "nodes": [{"id": "a", "pass": {}}]}
MACHINE = {
    "name": "whole-sm",
    "mode": "state_machine",
    "initial": "idle",
    "states": {"idle": {"on": {"GO": {"target": "done"}}}, "done": {"final": True}},
}


def _renamed(spec: dict[str, object], old: str, new: str) -> str:
    """The spec as JSON with every string `old` (a key or a value) spelled `new`."""
    text = json.dumps(spec)
    assert json.dumps(old) in text
    return text.replace(json.dumps(old), json.dumps(new))


@pytest.mark.parametrize(
    ("spec", "old"),
    [(DAG, "a"), (MACHINE, "idle"), (MACHINE, "GO")],
    ids=["node id", "state name", "event name"],
)
async def test_a_name_with_a_final_newline_is_refused(
    harness: Harness, spec: dict[str, object], old: str
) -> None:
    text = _renamed(spec, old, old + "\n")
    with pytest.raises(InvalidWorkflow):
        await harness.engine.create_workflow(load_workflow(text))
    # The same spec without the newline is fine: the newline alone was refused.
    await harness.engine.create_workflow(load_workflow(json.dumps(spec)))


def test_a_label_with_a_final_newline_is_refused() -> None:
    assert label_problems({"team\n": "x"}, "labels")
    assert label_problems({"team": "x\n"}, "labels")
    assert not label_problems({"team": "x"}, "labels")
