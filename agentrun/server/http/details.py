"""Error details for Connect errors: the `google.rpc.Status` details (google.protobuf `Any`s)
as connectrpc `ErrorDetail`s.

connectrpc encodes details with protobuf-py, another protobuf runtime than the one agentrun
uses. The bytes pass through unchanged (`type` + base64 `value`, what Connect clients decode).
For the standard `google.rpc` details (ErrorInfo, BadRequest, PreconditionFailure, RetryInfo,
...) the detail also carries the decoded message, so the JSON error has Connect's readable
`debug` field: a `curl` user sees the field violations without decoding base64.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from connectrpc.errors import ErrorDetail
from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import error_details_pb2
from protobuf.wkt.google.protobuf import any_pb

log = logging.getLogger("agentrun.server.http")


def connect_details(details: Iterable[any_pb2.Any]) -> list[ErrorDetail]:
    registry = _registry()
    out = []
    for detail in details:
        packed = any_pb.Any(type_url=detail.type_url, value=detail.value)
        message = None
        if registry is not None:
            desc = registry.message(detail.type_url.rpartition("/")[2])
            if desc is not None:
                try:
                    message = packed.unpack(desc)
                except Exception:
                    message = None
        out.append(ErrorDetail(message if message is not None else packed))
    return out


@functools.cache
def _registry() -> Any:
    """A protobuf-py registry of google/rpc/error_details.proto, built from the descriptor
    agentrun's own runtime has (None if protobuf-py cannot build it: no `debug` then)."""
    try:
        from protobuf import Registry
        from protobuf._codegen import file_desc  # what protobuf-py's generated code calls
        from protobuf.wkt.google.protobuf import duration_pb

        proto = descriptor_pb2.FileDescriptorProto()
        error_details_pb2.DESCRIPTOR.CopyToProto(proto)
        for message in proto.message_type:
            _set_json_names(message)
        return Registry(file_desc(proto.SerializeToString(), [duration_pb.desc()], {}))
    except Exception:
        log.warning("error details will have no debug JSON", exc_info=True)
        return None


def _set_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    # protoc fills json_name when it writes descriptors for plugins; CopyToProto does not.
    for field in message.field:
        head, *rest = field.name.split("_")
        field.json_name = head + "".join(part[:1].upper() + part[1:] for part in rest)
    for nested in message.nested_type:
        _set_json_names(nested)
