"""Create/UpdateWorkflow answer with the message they stored, not a rebuild of the stored form
(which parses every node again on the event loop): the answer must be exactly GetWorkflow's for
the same version, whatever the request looked like. GetWorkflow and ListWorkflows rebuild the
message on a worker thread."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from agentrun.engine.loader import load_workflow, spec_to_dict
from agentrun.server import convert
from agentrun.server.workflow_service import WorkflowService
from agentrun.v1 import workflow_pb2 as wf_pb
from agentrun.v1 import workflow_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# Fields at their defaults, set and absent; values a round trip through JSON could change.
EDGES = """
name: {name}
description: ""
defaults: {{timeout: 0.5s, retry: {{}}}}
timeout: 1800s
input_schema: {{type: object, properties: {{}}}}
nodes:
  - id: a
    pass: {{value: {{zero: -0.0, half: 1.5, big: 1000000000000000, none: null, empty: "",
                    list: [1, 2.0, [], {{}}, true]}}}}
  - id: b
    needs: [a]
    agent: {{model: mock/echo, prompt: hi, temperature: 0, stream: false, max_turns: 0}}
    retry: {{max_attempts: 1, non_retryable: []}}
  - id: c
    needs: [b]
    pass: {{value: 0}}
    timeout: 1.000000001s
"""


def _workflows() -> list[tuple[str, str]]:
    """(case, YAML source) of every example workflow, plus the edge cases."""
    cases = [("edges", EDGES.format(name="edges"))]
    for path in EXAMPLES:
        if not path.name.endswith("_config.yaml"):
            cases.append((path.stem, path.read_text()))
    return cases


async def _engine_for(source: str) -> Any:
    """An engine with the config the example's leading comment names (its mock agents)."""
    from agentrun.engine import Engine
    from agentrun.integrations import default_agents, default_tools
    from agentrun.storage.memory import MemoryStore

    match = re.search(r"--config (examples/\S+)", source)
    config = yaml.safe_load((ROOT / match.group(1)).read_text()) if match else {}
    tools = default_tools(config)
    engine = Engine(MemoryStore(), tools=tools, agents=default_agents(config, tools=tools))
    await engine.start()
    return engine


WORKFLOWS = _workflows()


def _bytes(message: Any) -> bytes:
    return bytes(message.SerializeToString(deterministic=True))


async def _get(service: WorkflowService, workflow: Any) -> Any:
    got = await service.GetWorkflow(
        pb.GetWorkflowRequest(name=workflow.name, version=workflow.version), None
    )
    return got.workflow


def _requests(source: str) -> list[tuple[str, dict[str, Any]]]:
    """The same workflow as YAML, as JSON, and as a message."""
    spec = load_workflow(source)
    return [
        ("yaml", {"source": source}),
        ("json", {"source": json.dumps(spec_to_dict(spec))}),
        ("proto", {"spec": spec}),
    ]


def test_the_examples_are_covered() -> None:
    assert len(WORKFLOWS) > 3


@pytest.mark.parametrize(("case", "source"), WORKFLOWS, ids=[c for c, _ in WORKFLOWS])
async def test_create_and_update_answer_what_get_workflow_answers(case: str, source: str) -> None:
    engine = await _engine_for(source)
    try:
        await _answers(WorkflowService(engine), source)
    finally:
        await engine.stop(grace=0)


async def _answers(service: WorkflowService, source: str) -> None:
    for form, definition in _requests(source):
        created = await service.CreateWorkflow(pb.CreateWorkflowRequest(**definition), None)
        got = await _get(service, created.workflow)
        assert created.workflow == got, form
        assert _bytes(created.workflow) == _bytes(got), form
        # An update names the workflow in the request; the spec may leave its name empty.
        name = created.workflow.name.removeprefix("workflows/")
        update = definition
        if "spec" in definition:
            unnamed = wf_pb.WorkflowSpec()
            unnamed.CopyFrom(definition["spec"])
            unnamed.ClearField("name")
            update = {"spec": unnamed}
        updated = await service.UpdateWorkflow(pb.UpdateWorkflowRequest(name=name, **update), None)
        assert updated.workflow.version == created.workflow.version + 1
        got = await _get(service, updated.workflow)
        assert _bytes(updated.workflow) == _bytes(got), form
        # A repeated request id answers the first version, as GetWorkflow shows it.
        first = await service.CreateWorkflow(
            pb.CreateWorkflowRequest(request_id=f"{form}-1", **definition), None
        )
        again = await service.CreateWorkflow(
            pb.CreateWorkflowRequest(request_id=f"{form}-1", **definition), None
        )
        assert again.workflow.version == first.workflow.version
        assert _bytes(again.workflow) == _bytes(await _get(service, first.workflow)), form


async def test_fields_this_version_does_not_know_are_not_in_the_answer(engine: Any) -> None:
    """The stored form drops them, so GetWorkflow cannot show them: neither does the answer."""
    spec = load_workflow(EDGES.format(name="unknown"))
    wire = spec.SerializeToString() + b"\xf8\x3e\x07"  # field 999, varint 7
    spec = wf_pb.WorkflowSpec.FromString(wire)
    spec.nodes[0].MergeFromString(b"\xf8\x3e\x08")
    service = WorkflowService(engine)
    created = await service.CreateWorkflow(pb.CreateWorkflowRequest(spec=spec), None)
    assert _bytes(created.workflow) == _bytes(await _get(service, created.workflow))


async def test_create_does_not_rebuild_the_stored_spec(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rebuild(data: Any) -> Any:
        raise AssertionError("the answer rebuilt the stored spec")

    service = WorkflowService(engine)
    monkeypatch.setattr(convert, "spec_from_stored", rebuild)
    spec = load_workflow(EDGES.format(name="norebuild"))
    created = await service.CreateWorkflow(pb.CreateWorkflowRequest(spec=spec), None)
    name = created.workflow.name.removeprefix("workflows/")
    await service.UpdateWorkflow(pb.UpdateWorkflowRequest(name=name, spec=spec), None)
    request = pb.CreateWorkflowRequest(spec=spec, request_id="r")
    await service.CreateWorkflow(request, None)
    await service.CreateWorkflow(request, None)


async def test_get_and_list_rebuild_the_spec_off_the_event_loop(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = WorkflowService(engine)
    spec = load_workflow(EDGES.format(name="offloop"))
    created = await service.CreateWorkflow(pb.CreateWorkflowRequest(spec=spec), None)
    threads: list[threading.Thread] = []
    build = convert.spec_from_stored

    def spy(data: Any) -> Any:
        threads.append(threading.current_thread())
        return build(data)

    monkeypatch.setattr(convert, "spec_from_stored", spy)
    got = await _get(service, created.workflow)
    listed = await service.ListWorkflows(pb.ListWorkflowsRequest(), None)
    assert listed.workflows == [got]
    assert len(threads) == 2
    assert threading.main_thread() not in threads


def test_a_request_spec_and_its_json_are_one_message() -> None:
    """The JSON form of the requests above is the loader's; the proto JSON mapping agrees."""
    spec = load_workflow(EDGES.format(name="json"))
    assert json_format.ParseDict(json_format.MessageToDict(spec), wf_pb.WorkflowSpec()) == spec
