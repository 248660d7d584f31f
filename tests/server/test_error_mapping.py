"""The one map from exception classes to statuses (agentrun/server/errors.py): every engine
error class and every ApiError reason maps to a status other than INTERNAL and UNKNOWN, each
reason is a value of agentrun.v1.ErrorReason, and no answer outgrows gRPC's metadata limits."""

from __future__ import annotations

import inspect
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

import agentrun.engine.machine.errors  # noqa: F401 - registers the state machine errors
from agentrun.engine import errors as engine_errors
from agentrun.engine.errors import AgentrunError, Diagnostic
from agentrun.server.errors import CODES, STATUS_BY_CLASS, ApiError, classify, to_status
from agentrun.storage.base import LeaseLost, StoreError
from agentrun.v1 import error_reason_pb2

REASONS = {
    value.name.removeprefix("ERROR_REASON_")
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values
    if value.name != "ERROR_REASON_UNSPECIFIED"
}


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _instance(cls: type[AgentrunError]) -> AgentrunError:
    """An instance built from the constructor's required arguments."""
    args: dict[str, Any] = {}
    positional: list[Any] = []
    for name, param in inspect.signature(cls).parameters.items():
        if param.default is not inspect.Parameter.empty or param.kind in (
            param.VAR_KEYWORD,
            param.VAR_POSITIONAL,
        ):
            continue
        value: Any = [Diagnostic("x", "bad")] if name == "diagnostics" else "x"
        if name == "accepted":
            value = ["A"]
        if param.kind == param.KEYWORD_ONLY:
            args[name] = value
        else:
            positional.append(value)
    return cls(*positional, **args)


ENGINE_ERRORS = _subclasses(AgentrunError)


def test_every_engine_error_class_is_found() -> None:
    names = {cls.__name__ for cls in ENGINE_ERRORS}
    assert {"InvalidWorkflow", "ResourceExhausted", "InstanceNotFound", "EventNotAccepted"} <= names


@pytest.mark.parametrize("cls", ENGINE_ERRORS, ids=lambda c: c.__name__)
def test_engine_errors_never_map_to_internal_or_unknown(cls: type[AgentrunError]) -> None:
    exc = _instance(cls)
    code, reason, _, _ = classify(exc)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), cls
    assert reason in REASONS, f"{cls.__name__}.reason {reason!r} is not an ErrorReason"
    assert to_status(exc).code == code.value[0]


@pytest.mark.parametrize("reason", sorted(REASONS - {"INTERNAL"}))
def test_api_error_reasons_never_map_to_internal_or_unknown(reason: str) -> None:
    code, *_ = classify(ApiError(reason, "x"))
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    assert CODES[reason] == code


def test_every_reason_has_a_code() -> None:
    assert set(CODES) == REASONS


@pytest.mark.parametrize("exc", [StoreError("down"), LeaseLost("gone")], ids=repr)
def test_store_failures_are_unavailable(exc: Exception) -> None:
    assert classify(exc)[0] == grpc.StatusCode.UNAVAILABLE


def test_rows_are_most_specific_first() -> None:
    classes = [cls for cls, _ in STATUS_BY_CLASS]
    for i, cls in enumerate(classes):
        for later in classes[i + 1 :]:
            assert not issubclass(later, cls) or later is cls, f"{later} is shadowed by {cls}"


def test_only_unknown_classes_are_internal() -> None:
    assert classify(RuntimeError("boom"))[:3] == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        "internal error",
    )


def test_quota_answers_resource_exhausted_with_retry_and_quota_failure() -> None:
    exc = engine_errors.ResourceExhausted(
        "full", retry_after=2.0, subject="tenant:acme", quota="max_pending (3)"
    )
    status = to_status(exc)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    kinds = {d.TypeName() for d in status.details}
    assert {"google.rpc.RetryInfo", "google.rpc.QuotaFailure", "google.rpc.ErrorInfo"} <= kinds
    quota = error_details_pb2.QuotaFailure()
    next(d for d in status.details if d.Is(quota.DESCRIPTOR)).Unpack(quota)
    assert quota.violations[0].subject == "tenant:acme"


@pytest.mark.parametrize("count", [1, 100, 101, 10_000])
def test_diagnostics_are_capped_to_fit_in_metadata(count: int) -> None:
    diags = [
        Diagnostic(f"nodes[0].needs[{i}]", f"unknown node 'n{i:05d}' " * 3) for i in range(count)
    ]
    status = to_status(engine_errors.InvalidWorkflow(diags))
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert len(bad.field_violations) <= 101
    # the status travels in trailers (details base64-encoded, the message percent-encoded):
    # under the 8 KB a client accepts by default
    assert status.ByteSize() * 4 / 3 + len(status.message.encode()) * 3 < 8000
    listed = [v for v in bad.field_violations if v.field]
    if count > len(listed):
        assert bad.field_violations[-1].description == f"… and {count - len(listed)} more problems"
    assert status.message.count("\n") <= 101
    if count > 1:
        assert "more" in status.message or status.message.count("\n") == count


def test_huge_values_in_messages_are_clipped() -> None:
    status = to_status(
        ApiError(
            "INVALID_ARGUMENT",
            "name: " + "x" * 20_000,
            violations=[Diagnostic("name", "y" * 20_000)],
        )
    )
    assert len(status.message) <= 1000
    assert status.ByteSize() * 4 / 3 + len(status.message.encode()) * 3 < 8000
