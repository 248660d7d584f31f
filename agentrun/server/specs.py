"""Workflow specs from requests: a typed `WorkflowSpec`, or YAML/JSON source text read by the
engine's loader (which reports every problem with its field path)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from agentrun.engine.loader import load_workflow
from agentrun.server.errors import invalid_argument
from agentrun.v1 import workflow_pb2 as wf_pb


def load_source(text: str) -> wf_pb.WorkflowSpec:
    return load_workflow(text)


def from_proto(spec: wf_pb.WorkflowSpec) -> wf_pb.WorkflowSpec:
    # The engine takes the message itself; the compiler checks what the type system cannot.
    return spec


async def from_request(request: Any, *, name: str | None = None) -> Any:
    """The engine spec from a request's `definition` oneof.

    Source text is parsed on a worker thread: a large file takes a few hundred milliseconds,
    which on the event loop would hold every other call (health included) as long."""
    which = request.WhichOneof("definition")
    if which == "spec":
        spec = request.spec
        if name is not None:
            if spec.name and spec.name != name:
                raise invalid_argument("spec.name", f"must be empty or {name!r}")
            if not spec.name:
                spec = wf_pb.WorkflowSpec()
                spec.CopyFrom(request.spec)
                spec.name = name
        return from_proto(spec)
    if which == "source":
        loaded = await asyncio.to_thread(load_source, request.source)
        if name is not None:
            loaded_name = spec_name(loaded)
            if loaded_name and loaded_name != name:
                raise invalid_argument("source", f"the workflow's name must be {name!r}")
        return loaded
    raise invalid_argument("spec", "a workflow is required: set `spec` or `source`")


def fingerprint(request: Any) -> str:
    """A digest of a request's definition, for telling a repeated request id from a reused one.
    Only a request with an id needs it: serializing and hashing 10,000 nodes takes ~2 ms."""
    if request.WhichOneof("definition") == "spec":
        text = b"spec:" + request.spec.SerializeToString(deterministic=True)
    else:
        text = b"source:" + request.source.encode()
    return hashlib.sha256(text).hexdigest()


def spec_name(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("name") or "")
    return str(getattr(spec, "name", "") or "")
