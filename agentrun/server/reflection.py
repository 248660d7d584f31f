"""gRPC server reflection, `grpc.reflection.v1` and `v1alpha`, over every agentrun .proto file
with its comments.

grpcio-reflection serves v1alpha only, from the descriptor pool, and only the files that the
process happened to import (`error_reason.proto` is imported by no service, so clients could
not find `ErrorReason`), with the comments stripped (generated `_pb2` modules carry none). So:

- every `agentrun.v1` `_pb2` module is imported, so each file is in the pool;
- agentrun files are served from `agentrun/v1/descriptor_set.binpb`, which `make proto`
  writes with `--include_source_info` (tests/test_proto_fresh.py keeps it in step), so
  `grpcurl describe` shows the proto comments; other files (google/protobuf/...) from the pool;
- v1 is the same protocol as v1alpha under another package (the messages are identical field
  for field), so its descriptor is derived from v1alpha's and one implementation serves both.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterable
from functools import cache
from importlib import resources
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

import agentrun.v1
from agentrun import spec_words

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_DESCRIPTOR_SET = "descriptor_set.binpb"


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serves both reflection versions on `server`, listing `service_names` and themselves."""
    load_agentrun_files()
    names = tuple(sorted({*service_names, V1ALPHA, V1}))
    sources = source_files()
    for service, messages in ((V1ALPHA, v1alpha_pb2), (V1, v1_messages())):
        servicer = _Reflection(messages, names, sources)
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.info,
            request_deserializer=messages.ServerReflectionRequest.FromString,
            response_serializer=messages.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )


def load_agentrun_files() -> list[FileDescriptor]:
    """Imports every generated agentrun.v1 module: each file's descriptors join the pool."""
    files = []
    for module in pkgutil.iter_modules(agentrun.v1.__path__):
        if module.name.endswith("_pb2"):
            files.append(importlib.import_module(f"agentrun.v1.{module.name}").DESCRIPTOR)
    return files


@cache
def source_files() -> dict[str, bytes]:
    """Serialized FileDescriptorProtos with source info (comments), by file name."""
    data = resources.files(agentrun.v1).joinpath(_DESCRIPTOR_SET).read_bytes()
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    for file in descriptor_set.file:
        _drop_default_json_names(file.message_type)
    return {f.name: f.SerializeToString() for f in descriptor_set.file}


def _drop_default_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc writes every field's json_name into a descriptor set; the generated code keeps
    only explicit ones, and clients read an explicit one as a choice (grpcurl then prints
    `executionStateChanged` instead of the proto name). Serve what the code has."""
    for message in messages:
        for field in message.field:
            if field.json_name == spec_words.default_json_name(field.name):
                field.ClearField("json_name")
        _drop_default_json_names(message.nested_type)


@cache
def v1_messages() -> Any:
    """The v1 message classes: v1alpha's descriptor under the v1 package, added to the pool."""
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(_V1_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
        old, new = f".{proto.package}.", ".grpc.reflection.v1."
        proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
        proto.ClearField("options")
        for message in proto.message_type:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name.removeprefix(old)
        for service in proto.service:
            for method in service.method:
                method.input_type = new + method.input_type.removeprefix(old)
                method.output_type = new + method.output_type.removeprefix(old)
        file = pool.AddSerializedFile(proto.SerializeToString())
    return SimpleNamespace(
        **{
            name: message_factory.GetMessageClass(descriptor)
            for name, descriptor in file.message_types_by_name.items()
        }
    )


class _Reflection:
    """One reflection servicer over the default pool, for either version's message classes."""

    def __init__(self, messages: Any, service_names: tuple[str, ...], sources: dict[str, bytes]):
        self.pb = messages
        self.service_names = service_names
        self.sources = sources
        self.pool = descriptor_pool.Default()

    async def info(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: Any) -> Any:
        pb = self.pb
        which = request.WhichOneof("message_request")
        try:
            if which == "file_by_filename":
                return self.files(request, self.pool.FindFileByName(request.file_by_filename))
            if which == "file_containing_symbol":
                symbol = request.file_containing_symbol
                return self.files(request, self.pool.FindFileContainingSymbol(symbol))
            if which == "file_containing_extension":
                ask = request.file_containing_extension
                extended = self.pool.FindMessageTypeByName(ask.containing_type)
                extension = self.pool.FindExtensionByNumber(extended, ask.extension_number)
                # types-protobuf's FieldDescriptor omits `file` (an extension's own file).
                return self.files(request, extension.file)  # type: ignore[attr-defined]
            if which == "all_extension_numbers_of_type":
                extended = self.pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = sorted(e.number for e in self.pool.FindAllExtensions(extended))
                answer = pb.ExtensionNumberResponse(
                    base_type_name=extended.full_name, extension_number=numbers
                )
                return pb.ServerReflectionResponse(
                    all_extension_numbers_response=answer, original_request=request
                )
            if which == "list_services":
                services = [pb.ServiceResponse(name=name) for name in self.service_names]
                return pb.ServerReflectionResponse(
                    list_services_response=pb.ListServiceResponse(service=services),
                    original_request=request,
                )
        except KeyError:
            asked = getattr(request, which)
            asked = asked if isinstance(asked, str) else str(asked).replace("\n", " ").strip()
            return self.error(request, grpc.StatusCode.NOT_FOUND, f"{which}: {asked} not found")
        return self.error(request, grpc.StatusCode.INVALID_ARGUMENT, "no request was set")

    def files(self, request: Any, file: FileDescriptor) -> Any:
        """The file and every file it imports, transitively: a client needs them all."""
        found: dict[str, FileDescriptor] = {}
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name not in found:
                found[current.name] = current
                pending.extend(current.dependencies)
        protos = [self.serialized(f) for f in found.values()]
        return self.pb.ServerReflectionResponse(
            file_descriptor_response=self.pb.FileDescriptorResponse(file_descriptor_proto=protos),
            original_request=request,
        )

    def serialized(self, file: FileDescriptor) -> bytes:
        source = self.sources.get(file.name)
        if source is not None:
            return source
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return proto.SerializeToString()

    def error(self, request: Any, code: grpc.StatusCode, message: str) -> Any:
        return self.pb.ServerReflectionResponse(
            error_response=self.pb.ErrorResponse(error_code=code.value[0], error_message=message),
            original_request=request,
        )
