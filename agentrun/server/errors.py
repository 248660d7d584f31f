"""The one place where errors become gRPC statuses.

Engine errors (`agentrun.engine.errors.AgentrunError`, keyed by `reason`) and the server's own
(`ApiError`) map to a status code and `google.rpc.Status` details: one `ErrorInfo` (reason,
domain "agentrun", metadata), plus `BadRequest` field violations, `PreconditionFailure` or
`RetryInfo` where they apply. Anything else is INTERNAL with no internals in the message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentrun.engine.errors import AgentrunError, Diagnostic
from agentrun.storage.base import StoreError

DOMAIN = "agentrun"
log = logging.getLogger("agentrun.server")

# reason -> status code; every value of agentrun.v1.ErrorReason is here.
CODES: dict[str, grpc.StatusCode] = {
    "INVALID_WORKFLOW": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_INPUT": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "WORKFLOW_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INSTANCE_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "EXECUTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "ILLEGAL_TRANSITION": grpc.StatusCode.FAILED_PRECONDITION,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "SHUTTING_DOWN": grpc.StatusCode.UNAVAILABLE,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "UNIMPLEMENTED": grpc.StatusCode.UNIMPLEMENTED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


class ApiError(Exception):
    """An error the server itself raises (bad request fields, auth, rate limits)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        violations: Sequence[Diagnostic] = (),
        retry_after: float | None = None,
        **metadata: Any,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = list(violations)
        self.retry_after = retry_after
        self.metadata = {k: str(v) for k, v in metadata.items() if v is not None}


def invalid_argument(field: str, message: str) -> ApiError:
    return ApiError(
        "INVALID_ARGUMENT", f"{field}: {message}", violations=[Diagnostic(field, message)]
    )


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _violations(diagnostics: Iterable[Any]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=d.path, description=d.message)
            for d in diagnostics
        ]
    )


def to_status(exc: BaseException) -> status_pb2.Status:
    """The `google.rpc.Status` for an exception raised while serving a call."""
    if isinstance(exc, (AgentrunError, ApiError)):
        reason = exc.reason
        text = exc.message
        metadata = dict(exc.metadata)
    elif isinstance(exc, StoreError):
        log.warning("store unavailable: %s", exc)
        reason, text, metadata = "UNAVAILABLE", "the store is unavailable; retry", {}
    else:
        log.exception("internal error", exc_info=exc)
        reason, text, metadata = "INTERNAL", "internal error", {}
    code = CODES.get(reason, grpc.StatusCode.INTERNAL)
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    diagnostics = getattr(exc, "diagnostics", None) or getattr(exc, "violations", None)
    if diagnostics:
        details.append(_pack(_violations(diagnostics)))
    if reason == "ILLEGAL_TRANSITION":
        state = metadata.get("current_state", "")
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="STATE",
                            subject=metadata.get("execution", "") or metadata.get("name", ""),
                            description=f"not allowed in state {state}" if state else text,
                        )
                    ]
                )
            )
        )
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(max(1_000_000, int(retry_after * 1e9)))
        details.append(_pack(delay))
    return status_pb2.Status(code=_CODE_NUMBERS[code], message=text, details=details)


_CODE_NUMBERS = {c: code_pb2.Code.Value(c.name) for c in grpc.StatusCode}


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Ends the call with the status for `exc` (raises grpc.aio.AbortError)."""
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))
