"""Stored specs are read one way (`spec_from_stored`) by the engine and the server: what every
version stored reads back and runs; anything else is refused with its field path, never an
INTERNAL error, never a spec silently shortened."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentrun.client import AsyncClient, ExecutionState
from agentrun.client import errors as e
from agentrun.engine import Diagnostic, InvalidWorkflow
from agentrun.engine.loader import load_workflow, spec_from_stored, spec_to_dict
from agentrun.storage.records import WorkflowRecord

pytestmark = pytest.mark.timeout(30)

# The stored form as every version has written it (spec_to_dict, through JSON): proto names
# in snake_case, renamed fields under their file words, full enum names, proto durations.
STORED = {
    "name": "stored",
    "nodes": [
        {
            "id": "a",
            "pass": {"value": {"n": 1.0}},
            "retry": {"max_attempts": 2, "backoff": "BACKOFF_FIXED", "initial_interval": "0.500s"},
        },
        {
            "id": "b",
            "pass": {"value": "${{ nodes.a.output.n + 1 }}"},
            "export": {"n": "${{ output }}"},
        },
        {
            "id": "c",
            "switch": {"cases": [{"when": "${{ vars.n == 2 }}", "goto": "d"}], "default": "d"},
        },
        {"id": "d", "pass": {"value": 3}},
    ],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    "timeout": "1800s",
    "compensation": {"strategy": "STRATEGY_REVERSE"},
}


async def _store(engine: Any, spec: dict[str, Any]) -> None:
    await engine.store.create_workflow(
        WorkflowRecord(tenant="default", name=spec["name"], version=0, spec=spec, created_at=0.0)
    )


def test_what_was_stored_reads_back_as_it_was_written() -> None:
    spec = spec_from_stored(json.loads(json.dumps(STORED)))
    assert spec_to_dict(spec) == STORED
    assert spec.nodes[2].switch_node.cases[0].target == "d"
    source = load_workflow(json.dumps(STORED))
    assert spec_from_stored(spec_to_dict(source)) == source


def test_a_stored_field_this_version_does_not_know_is_refused_with_its_path() -> None:
    stored = json.loads(json.dumps(STORED))
    stored["nodes"][0]["retries"] = 3
    stored["nodes"][1]["pass"]["value"] = {"x": float("nan")}
    with pytest.raises(InvalidWorkflow) as caught:
        spec_from_stored(stored)
    paths = [d.path for d in caught.value.diagnostics]
    assert paths == ["nodes[0].retries", "nodes[1].pass.value.x"]
    assert isinstance(caught.value.diagnostics[0], Diagnostic)


async def test_a_stored_spec_reads_and_runs_through_the_server(
    engine: Any, client: AsyncClient
) -> None:
    await _store(engine, STORED)
    workflow = await client.get_workflow("stored")
    assert workflow.spec == STORED
    execution = await client.start_execution("stored", {})
    done = await client.wait(execution, timeout=10)
    assert done.state is ExecutionState.SUCCEEDED


async def test_a_damaged_stored_spec_is_an_invalid_workflow_naming_the_field(
    engine: Any, client: AsyncClient
) -> None:
    """Before: GetWorkflow answered the spec without the field it did not know (dropped
    silently) and StartExecution failed INTERNAL; now both say what is wrong and where."""
    await _store(
        engine, {**STORED, "name": "damaged", "nodes": [{"id": "a", "pass": {}, "retries": 3}]}
    )
    for call in (client.get_workflow("damaged"), client.start_execution("damaged", {})):
        with pytest.raises(e.InvalidWorkflow) as caught:
            await call
        assert [v.field for v in caught.value.violations] == ["nodes[0].retries"]


async def test_one_damaged_stored_spec_does_not_fail_the_list(
    engine: Any, client: AsyncClient
) -> None:
    """Before: ListWorkflows failed as a whole when one stored spec could not be read, so no
    workflow of the tenant could be listed (in the console either). Now the damaged one is
    listed with its problems instead of its spec, and the others as they are."""
    await _store(engine, STORED)
    await _store(
        engine, {**STORED, "name": "damaged", "nodes": [{"id": "a", "pass": {}, "retries": 3}]}
    )
    listed = {w.name: w async for w in client.list_workflows()}
    assert set(listed) == {"damaged", "stored"}
    assert [(p.field, "retries" in p.description) for p in listed["damaged"].problems] == [
        ("nodes[0].retries", True)
    ]
    assert listed["damaged"].spec == {}
    assert listed["stored"].problems == []
    assert listed["stored"].spec["nodes"][0]["id"] == "a"
